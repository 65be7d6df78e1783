//! A fixed-size bitset over instance-type indices: claims intersect these on every join.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeSet {
    words: Vec<u64>,
}

impl TypeSet {
    pub fn empty(n: usize) -> Self {
        TypeSet {
            words: vec![0; n.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn intersect_with(&mut self, o: &TypeSet) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a &= *b;
        }
    }

    pub fn union_with(&mut self, o: &TypeSet) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a |= *b;
        }
    }

    pub fn subtract(&mut self, o: &TypeSet) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a &= !*b;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ops() {
        let mut a = TypeSet::empty(130);
        a.insert(0);
        a.insert(64);
        a.insert(129);
        let mut b = TypeSet::empty(130);
        b.insert(64);
        b.insert(129);
        a.intersect_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![64, 129]);
        assert_eq!(a.len(), 2);
        a.remove(64);
        assert!(!a.contains(64));
        assert!(!a.is_empty());
    }
}
