//! [`Field`]: a value that is absent, explicitly `null`, or present.

/// One key of a Protocol object, as it arrived: absent, `null`, or a value.
///
/// Protocol sends partial objects (an `updated` payload may carry only the keys that
/// changed) and uses `null` freely, and the mirror's merge rules treat the three cases
/// differently: an absent key keeps the stored value, an explicit `null` overwrites it.
/// `Option<Option<T>>` could say the same, but less readably.
///
/// `From<Option<T>>` reads `None` as `null`, as serde writes an `Option`: a patch
/// built from an `Option` that is `None` erases the stored value. To leave a key out
/// of a patch, use [`Field::Absent`] (the default), or [`Field::or_absent`]:
///
/// ```
/// use protocol_types::Field;
///
/// let nickname: Option<String> = None;
/// assert_eq!(Field::<String>::from(nickname.clone()), Field::Null);
/// assert_eq!(Field::or_absent(nickname), Field::<String>::Absent);
/// assert_eq!(Field::or_absent(Some(3)), Field::Value(3));
/// ```
///
/// ```
/// use protocol_types::Field;
///
/// let mut stored: Field<String> = Field::from("Kevin");
/// stored.merge(Field::Absent);
/// assert_eq!(stored.value(), Some(&"Kevin".to_string()));
/// stored.merge(Field::Null);
/// assert!(stored.is_null());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Field<T> {
    /// The key was not in the object.
    #[default]
    Absent,
    /// The key was present with the value `null`.
    Null,
    /// The key was present with a value.
    Value(T),
}

impl<T> Field<T> {
    /// A value from `Some`, and [`Field::Absent`] (the key left out) from `None`;
    /// `Field::from(option)` gives `null` for `None`.
    pub fn or_absent(option: Option<T>) -> Self {
        option.map_or(Field::Absent, Field::Value)
    }

    /// `true` when the key was not in the object.
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// `true` when the key was present (with `null` or a value).
    pub fn is_present(&self) -> bool {
        !self.is_absent()
    }

    /// `true` when the key was present with the value `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }

    /// The value, if there is one (`None` for both absent and `null`).
    pub fn value(&self) -> Option<&T> {
        match self {
            Field::Value(value) => Some(value),
            Field::Absent | Field::Null => None,
        }
    }

    /// The value dereferenced, if there is one: `Option<&str>` from a
    /// `Field<String>` (`contact.username.as_deref()`), as `Option::as_deref` does.
    pub fn as_deref(&self) -> Option<&T::Target>
    where
        T: std::ops::Deref,
    {
        self.value().map(|value| &**value)
    }

    /// Consumes the field and returns its value, if there is one.
    pub fn into_value(self) -> Option<T> {
        match self {
            Field::Value(value) => Some(value),
            Field::Absent | Field::Null => None,
        }
    }

    /// Borrows the value inside: `Field<T>` to `Field<&T>`.
    pub fn as_ref(&self) -> Field<&T> {
        match self {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Value(value) => Field::Value(value),
        }
    }

    /// Applies `f` to the value, keeping absent and `null` as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Value(value) => Field::Value(f(value)),
        }
    }

    /// Merge rule of an `updated` event: a present `patch` (value or `null`) overwrites,
    /// an absent one keeps what is here.
    pub fn merge(&mut self, patch: Field<T>) {
        if patch.is_present() {
            *self = patch;
        }
    }

    /// Fill rule of a `created` event: `patch` is taken only where this key is absent
    /// (a stored `null` is a value, not a gap). Returns whether anything changed.
    pub fn fill(&mut self, patch: Field<T>) -> bool {
        if self.is_absent() && patch.is_present() {
            *self = patch;
            true
        } else {
            false
        }
    }
}

impl<T> From<T> for Field<T> {
    fn from(value: T) -> Self {
        Field::Value(value)
    }
}

impl From<&str> for Field<String> {
    fn from(value: &str) -> Self {
        Field::Value(value.to_owned())
    }
}

impl<T> From<Option<T>> for Field<T> {
    /// `Some` becomes a value and `None` becomes an explicit `null`.
    fn from(value: Option<T>) -> Self {
        match value {
            Some(value) => Field::Value(value),
            None => Field::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Field;

    #[test]
    fn as_deref_gives_the_value_borrowed() {
        assert_eq!(Field::<String>::from("ann").as_deref(), Some("ann"));
        assert_eq!(Field::<String>::Null.as_deref(), None);
        assert_eq!(Field::<String>::Absent.as_deref(), None);
    }

    #[test]
    fn merge_overwrites_with_present_keys_only() {
        let mut field = Field::Value(1);
        field.merge(Field::Absent);
        assert_eq!(field, Field::Value(1));
        field.merge(Field::Value(2));
        assert_eq!(field, Field::Value(2));
        field.merge(Field::Null);
        assert_eq!(field, Field::Null);
    }

    #[test]
    fn fill_only_fills_absent_keys() {
        let mut field: Field<i32> = Field::Absent;
        assert!(!field.fill(Field::Absent));
        assert!(field.fill(Field::Null));
        assert_eq!(field, Field::Null, "null fills a gap");
        assert!(!field.fill(Field::Value(3)), "a stored null is a value");
        assert_eq!(field, Field::Null);
    }

    #[test]
    fn conversions() {
        assert_eq!(Field::from(Some(1)), Field::Value(1));
        assert_eq!(Field::<i32>::from(None), Field::Null);
        assert_eq!(Field::from("a"), Field::Value("a".to_string()));
        assert_eq!(Field::Value(2).map(|v| v * 2).into_value(), Some(4));
        assert_eq!(Field::<i32>::Null.value(), None);
    }
}
