//! Reading typed fields out of DynamoDB items, with errors that name the table, key and field.

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;
use crate::error::FromSdk;
use crate::{Error, Result};

pub(crate) struct Fields<'a> {
    pub table: &'a str,
    pub key: String,
    pub item: &'a Item,
}

impl<'a> Fields<'a> {
    pub fn new(table: &'a str, key_attr: &str, item: &'a Item) -> Self {
        let key = item
            .get(key_attr)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "?".into());
        Fields { table, key, item }
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            table: self.table.to_string(),
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    pub fn opt_s(&self, name: &str) -> Result<Option<String>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.corrupt(format!("field {name} is not a string"))),
        }
    }

    pub fn s(&self, name: &str) -> Result<String> {
        self.opt_s(name)?
            .ok_or_else(|| self.corrupt(format!("field {name} is missing")))
    }

    pub fn opt_n<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(format!("field {name} = {n:?} is not a valid number"))),
            Some(_) => Err(self.corrupt(format!("field {name} is not a number"))),
        }
    }

    pub fn n<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        self.opt_n(name)?
            .ok_or_else(|| self.corrupt(format!("field {name} is missing")))
    }

    pub fn n_or_zero<T: std::str::FromStr + Default>(&self, name: &str) -> Result<T> {
        Ok(self.opt_n(name)?.unwrap_or_default())
    }

    pub fn string_list(&self, name: &str) -> Result<Vec<String>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| {
                    v.as_s()
                        .cloned()
                        .map_err(|_| self.corrupt(format!("field {name} has a non-string entry")))
                })
                .collect(),
            Some(_) => Err(self.corrupt(format!("field {name} is not a list"))),
        }
    }

    pub fn number_map(&self, name: &str) -> Result<Vec<(String, i64)>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
            Some(AttributeValue::M(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    AttributeValue::N(n) => n
                        .parse()
                        .map(|n| (k.clone(), n))
                        .map_err(|_| self.corrupt(format!("field {name}.{k} is not an integer"))),
                    _ => Err(self.corrupt(format!("field {name}.{k} is not a number"))),
                })
                .collect(),
            Some(_) => Err(self.corrupt(format!("field {name} is not a map"))),
        }
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether a failed call was a conditional-check failure (the condition decided, not an error).
pub(crate) fn is_condition_failure<E>(err: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// The outcome of a conditional write: true when written, false when the condition said no.
pub(crate) fn conditional<T, E>(
    operation: &'static str,
    result: std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E>>,
) -> Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(Error::aws(operation, e)),
    }
}

/// The outcome of a conditional transaction: true when written, false when a condition said no.
/// A transaction cancelled for another reason (a conflict with a concurrent transaction) is an
/// error for the caller to retry: it decided nothing.
pub(crate) fn transaction<T>(
    operation: &'static str,
    result: std::result::Result<
        T,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
    >,
) -> Result<bool> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match result {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c))
                if c.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
            {
                Ok(false)
            }
            _ => Err(Error::aws(operation, e)),
        },
    }
}

/// An item's size as DynamoDB bills it ("Item sizes and formats" in the developer guide): the
/// UTF-8 length of every attribute name and value; a number one byte per two significant digits
/// plus one; a list or map 3 bytes plus its elements, each with 1 byte of its own.
pub fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn value_bytes(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => {
            let digits: String = n.chars().filter(char::is_ascii_digit).collect();
            digits
                .trim_start_matches('0')
                .trim_end_matches('0')
                .len()
                .max(1)
                .div_ceil(2)
                + 1
        }
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| value_bytes(e) + 1).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, e)| k.len() + value_bytes(e) + 1).sum::<usize>(),
        AttributeValue::Ss(l) => l.iter().map(String::len).sum(),
        AttributeValue::Ns(l) => l.iter().map(|n| value_bytes(&AttributeValue::N(n.clone()))).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}
