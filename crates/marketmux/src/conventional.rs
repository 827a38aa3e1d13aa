//! Settings that also read a conventional environment variable.
//!
//! Every flag reads `MARKETMUX_<FLAG>` through clap; a few also accept the
//! name other tools use for the same thing (`REDIS_ADDR`, `KAFKA_BROKERS`,
//! `DATABASE_URL`, `FINNHUB_API_KEY`). clap gives one variable per flag, so
//! "the flag, else the conventional variable" is resolved here, once, by a
//! [`Conventional`] per setting.

/// A setting given by its flag (or `MARKETMUX_<FLAG>`), else by a
/// conventional environment variable. A blank value counts as unset.
#[derive(Debug, Clone, Copy)]
pub struct Conventional {
    /// The flag, as the error message names it (`--redis-url`).
    pub flag: &'static str,
    /// The conventional environment variable (`REDIS_ADDR`).
    pub var: &'static str,
    /// An example value for the error message.
    pub example: &'static str,
}

/// Redis of the edge bus, latest prices and fired alerts.
pub const REDIS_URL: Conventional = Conventional {
    flag: "--redis-url",
    var: "REDIS_ADDR",
    example: "redis://127.0.0.1:6379",
};

/// Kafka bootstrap brokers.
pub const KAFKA_BROKERS: Conventional = Conventional {
    flag: "--kafka-brokers",
    var: "KAFKA_BROKERS",
    example: "127.0.0.1:9092",
};

/// PostgreSQL of the alert store.
pub const DATABASE_URL: Conventional = Conventional {
    flag: "--database-url",
    var: "DATABASE_URL",
    example: "postgres://postgres@127.0.0.1:5432/marketmux",
};

/// The Finnhub API token.
pub const FINNHUB_TOKEN: Conventional = Conventional {
    flag: "--finnhub-token",
    var: "FINNHUB_API_KEY",
    example: "the token of a Finnhub account",
};

impl Conventional {
    /// The flag's value, else the conventional variable's; `None` when
    /// neither is set or the one found is blank.
    pub fn resolve(&self, flag: Option<&str>) -> Option<String> {
        self.resolve_with(flag, |var| std::env::var(var).ok())
    }

    /// As [`Conventional::resolve`], but `role` cannot run without it: the
    /// error names the flag, the variable and an example.
    pub fn require(&self, flag: Option<&str>, role: &str) -> anyhow::Result<String> {
        self.resolve(flag).ok_or_else(|| self.missing(role))
    }

    /// The error of a `role` started without this setting.
    pub fn missing(&self, role: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "the {role} role needs {} (or {}), e.g. {}",
            self.flag,
            self.var,
            self.example
        )
    }

    /// [`Conventional::resolve`] with the environment read through `lookup`.
    fn resolve_with(
        &self,
        flag: Option<&str>,
        lookup: impl FnOnce(&str) -> Option<String>,
    ) -> Option<String> {
        let value = match flag {
            Some(v) => Some(v.to_owned()),
            None => lookup(self.var),
        };
        value.filter(|v| !v.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Option<&'static str>) -> impl FnOnce(&str) -> Option<String> {
        move |var| {
            assert_eq!(var, "REDIS_ADDR");
            value.map(str::to_owned)
        }
    }

    #[test]
    fn the_flag_wins_over_the_conventional_variable() {
        let got = REDIS_URL.resolve_with(Some("redis://flag"), env(Some("redis://env")));
        assert_eq!(got.as_deref(), Some("redis://flag"));
    }

    #[test]
    fn the_conventional_variable_fills_a_missing_flag() {
        let got = REDIS_URL.resolve_with(None, env(Some("redis://env")));
        assert_eq!(got.as_deref(), Some("redis://env"));
        assert_eq!(REDIS_URL.resolve_with(None, env(None)), None);
    }

    #[test]
    fn blank_counts_as_unset() {
        assert_eq!(REDIS_URL.resolve_with(Some("  "), env(None)), None);
        assert_eq!(REDIS_URL.resolve_with(None, env(Some(""))), None);
    }

    #[test]
    fn the_missing_error_names_flag_variable_and_example() {
        let e = KAFKA_BROKERS.missing("bridge").to_string();
        assert_eq!(
            e,
            "the bridge role needs --kafka-brokers (or KAFKA_BROKERS), e.g. 127.0.0.1:9092"
        );
    }
}
