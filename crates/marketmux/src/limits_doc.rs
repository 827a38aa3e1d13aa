//! README's "Limits and what happens at them" table states the defaults of
//! the flags it names: this test reads the table and compares every
//! `--flag` in its *default* column with the flag's default in clap, on every
//! role that has the flag, and checks that every numeric limit flag of
//! [`LimitArgs`] is in the table. A default changed in one place and not the
//! other fails here.

use clap::{Args as _, Command, CommandFactory as _};

use crate::cli::{Cli, LimitArgs};

const README: &str = include_str!("../../../README.md");
const SECTION: &str = "### Limits and what happens at them";
/// Flags of [`LimitArgs`] documented elsewhere in the README, not in the
/// table, with where.
const ELSEWHERE: [(&str, &str); 1] = [("drain-secs", "Graceful drain")];

/// The *default* cell of every row of the limits table.
fn default_cells(readme: &str) -> Result<Vec<&str>, String> {
    let start = readme
        .find(SECTION)
        .ok_or_else(|| format!("README has no {SECTION:?}"))?;
    let rows: Vec<&str> = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let header: Vec<&str> = rows
        .first()
        .ok_or("the limits section has no table")?
        .split('|')
        .map(str::trim)
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "default")
        .ok_or("the limits table has no `default` column")?;
    rows.iter()
        .skip(2) // header and separator
        .map(|row| {
            row.split('|')
                .nth(column)
                .map(str::trim)
                .ok_or_else(|| format!("a row without a default cell: {row}"))
        })
        .collect()
}

/// A quantity as the README writes it (`256 KiB`, `100,000`, `5 s`,
/// `50/s`) in the flag's own unit (bytes, a count, seconds).
fn quantity(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
        .unwrap_or(rest.len());
    let number: f64 = rest[..end]
        .trim_end_matches([',', '.'])
        .replace(',', "")
        .parse()
        .ok()?;
    let unit = rest[end..].trim_start();
    let scale = if unit.starts_with("KiB") {
        1024.0
    } else if unit.starts_with("MiB") {
        1024.0 * 1024.0
    } else {
        1.0
    };
    Some(number * scale)
}

/// Every `--flag` named in `cell`, with the quantity written before it
/// (after the previous flag, if any): `(flag, quantity)`.
fn flags_with_defaults(cell: &str) -> Result<Vec<(String, f64)>, String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = cell[from..].find("`--") {
        let name_start = from + at + 3;
        let name_len = cell[name_start..]
            .find('`')
            .ok_or_else(|| format!("unclosed flag in {cell:?}"))?;
        let name = &cell[name_start..name_start + name_len];
        let before = &cell[from..from + at];
        let value = quantity(before)
            .ok_or_else(|| format!("no default written before `--{name}` in {cell:?}"))?;
        found.push((name.to_owned(), value));
        from = name_start + name_len + 1;
    }
    Ok(found)
}

/// The numeric default of `--flag` in each subcommand that has it.
fn clap_defaults(cli: &Command, flag: &str) -> Vec<(String, Option<f64>)> {
    cli.get_subcommands()
        .filter_map(|role| {
            let arg = role.get_arguments().find(|a| a.get_long() == Some(flag))?;
            let default = arg
                .get_default_values()
                .first()
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse().ok());
            Some((role.get_name().to_owned(), default))
        })
        .collect()
}

#[test]
fn limits_table_states_the_flag_defaults() {
    let cli = Cli::command();
    let mut wrong = Vec::new();
    let mut named = Vec::new();
    for cell in default_cells(README).unwrap() {
        for (flag, readme) in flags_with_defaults(cell).unwrap() {
            let roles = clap_defaults(&cli, &flag);
            if roles.is_empty() {
                wrong.push(format!("--{flag}: no role has this flag"));
            }
            for (role, clap) in roles {
                if clap != Some(readme) {
                    wrong.push(format!(
                        "--{flag} on {role}: README says {readme}, the flag's default is {clap:?}"
                    ));
                }
            }
            named.push(flag);
        }
    }
    let limits = LimitArgs::augment_args(Command::new("limits"));
    for arg in limits.get_arguments() {
        let (Some(flag), Some(default)) = (arg.get_long(), arg.get_default_values().first()) else {
            continue;
        };
        let numeric = default.to_str().is_some_and(|d| d.parse::<f64>().is_ok());
        if numeric && !named.iter().any(|n| n == flag) && !ELSEWHERE.iter().any(|(f, _)| *f == flag)
        {
            wrong.push(format!(
                "--{flag} is a limit the README's table does not name"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "README {SECTION:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn reads_quantities_as_the_readme_writes_them() {
    assert_eq!(quantity("256 KiB"), Some(262_144.0));
    assert_eq!(quantity("4 MiB, 10,000 ticks"), Some(4_194_304.0));
    assert_eq!(quantity("100,000 "), Some(100_000.0));
    assert_eq!(quantity("50/s, bursts of 100"), Some(50.0));
    assert_eq!(quantity("; the server pings every 20 s "), Some(20.0));
    assert_eq!(quantity("none"), None);
    let cell = "60 s (`--idle-timeout-secs`); pings every 20 s (`--ping-interval-secs`)";
    assert_eq!(
        flags_with_defaults(cell).unwrap(),
        [
            ("idle-timeout-secs".to_owned(), 60.0),
            ("ping-interval-secs".to_owned(), 20.0)
        ]
    );
    assert!(flags_with_defaults("many (`--max-topics`)").is_err());
}
