//! A cursor over the crate's own binary encodings (a call's secrets, an HA call record): every
//! read is bounds-checked and a short one fails with the encoding's own error.

/// The bytes not read yet, and the error a read past their end gives.
pub(crate) struct Reader<'a, E> {
    rest: &'a [u8],
    short: E,
}

impl<'a, E: Clone> Reader<'a, E> {
    /// A reader of `bytes` whose reads past the end fail with `short`.
    pub(crate) fn new(bytes: &'a [u8], short: E) -> Self {
        Reader { rest: bytes, short }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], E> {
        let (a, b) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.short.clone())?;
        self.rest = b;
        Ok(a)
    }

    /// The next `N` bytes, as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], E> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| self.short.clone())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, E> {
        self.array().map(u8::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, E> {
        self.array().map(u32::from_be_bytes)
    }

    #[cfg(feature = "ha")]
    pub(crate) fn u64(&mut self) -> Result<u64, E> {
        self.array().map(u64::from_be_bytes)
    }

    /// Nothing is left, else `trailing`.
    pub(crate) fn end(&self, trailing: E) -> Result<(), E> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(trailing)
        }
    }
}
