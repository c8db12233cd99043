//! Arguments of fields a query selects further down, read ahead so that a parent can load
//! what its children will ask for in one batch.

use async_graphql::{Lookahead, Name, Value};

/// The arguments of a field the query selects exactly once (`None` for several selections, as
/// under aliases with their own arguments, or an unknown variable: the resolvers then load
/// for themselves).
pub struct Arguments(Vec<(Name, Value)>);

impl Arguments {
    pub fn of(field: &Lookahead<'_>) -> Option<Self> {
        let [field] = field.selection_fields().try_into().ok()?;
        field.arguments().ok().map(Self)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(arg, _)| arg.as_str() == name)
            .map(|(_, value)| value)
            .filter(|value| !matches!(value, Value::Null))
    }

    /// An integer argument: `Ok(None)` when absent, `Err` when not an integer.
    pub fn int(&self, name: &str) -> Result<Option<i64>, NotReadable> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(NotReadable),
            Some(_) => Err(NotReadable),
        }
    }

    /// An `i32` argument (an integer out of range is not readable).
    pub fn int32(&self, name: &str) -> Result<Option<i32>, NotReadable> {
        self.int(name)?
            .map(|n| i32::try_from(n).map_err(|_| NotReadable))
            .transpose()
    }

    /// A string argument: `Ok(None)` when absent, `Err` when not a string.
    pub fn string(&self, name: &str) -> Result<Option<&str>, NotReadable> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(NotReadable),
        }
    }
}

/// An argument of an unexpected type: left for the field's own resolver to report.
#[derive(Debug)]
pub struct NotReadable;
