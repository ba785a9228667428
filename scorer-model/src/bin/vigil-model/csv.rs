//! Strict reading of CSV time series for `score` and `train`.
//!
//! Why this exists: replaying a real series must fail loudly and precisely
//! on bad input — a missing column, a NaN, a timestamp going backwards, an
//! empty file — naming the row (1-based, the header is row 1) and the
//! column, rather than scoring garbage. Plain CSV only: comma-separated,
//! optional surrounding double quotes, no quoted commas.

use std::fmt;

/// A bad-input error: file, row (1-based, header = 1), column, reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// File the error is in.
    pub path: String,
    /// Row, 1-based (the header is row 1).
    pub row: usize,
    /// Column name.
    pub column: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: row {}, column \"{}\": {}",
            self.path, self.row, self.column, self.message
        )
    }
}

/// A parsed CSV: header plus rows of raw fields.
#[derive(Debug, Clone)]
pub struct Table {
    path: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn split(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"').to_string())
        .collect()
}

impl Table {
    /// Parse `text` (read from `path`). `first_column` names the column an
    /// empty file is reported against (the timestamp, usually).
    pub fn parse(path: &str, text: &str, first_column: &str) -> Result<Table, InputError> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let header = match lines.next() {
            Some(h) if !h.trim().is_empty() => split(h),
            _ => {
                return Err(InputError {
                    path: path.to_string(),
                    row: 1,
                    column: first_column.to_string(),
                    message: "empty file: expected a header row naming the columns".into(),
                })
            }
        };
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields = split(line);
            if fields.len() != header.len() {
                let column = header
                    .get(fields.len().min(header.len().saturating_sub(1)))
                    .cloned()
                    .unwrap_or_default();
                return Err(InputError {
                    path: path.to_string(),
                    row: i + 2,
                    column,
                    message: format!(
                        "expected {} fields like the header, got {}",
                        header.len(),
                        fields.len()
                    ),
                });
            }
            rows.push(fields);
        }
        if rows.is_empty() {
            return Err(InputError {
                path: path.to_string(),
                row: 2,
                column: first_column.to_string(),
                message: "no data rows after the header".into(),
            });
        }
        Ok(Table {
            path: path.to_string(),
            header,
            rows,
        })
    }

    /// Column names, in order.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Index of `column`, or an error naming it (row 1: the header).
    pub fn column(&self, column: &str) -> Result<usize, InputError> {
        self.header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| InputError {
                path: self.path.clone(),
                row: 1,
                column: column.to_string(),
                message: format!("no such column (columns: {})", self.header.join(", ")),
            })
    }

    fn err(&self, row: usize, col: usize, message: String) -> InputError {
        InputError {
            path: self.path.clone(),
            row: row + 2,
            column: self.header.get(col).cloned().unwrap_or_default(),
            message,
        }
    }

    /// Finite number at data row `row` (0-based), column index `col`.
    pub fn number(&self, row: usize, col: usize) -> Result<f64, InputError> {
        let raw = self
            .rows
            .get(row)
            .and_then(|r| r.get(col))
            .map(String::as_str)
            .unwrap_or("");
        let value: f64 = raw
            .parse()
            .map_err(|_| self.err(row, col, format!("not a number: {raw:?}")))?;
        if !value.is_finite() {
            return Err(self.err(row, col, format!("not a finite number: {raw:?}")));
        }
        Ok(value)
    }

    /// Non-negative finite number.
    pub fn non_negative(&self, row: usize, col: usize) -> Result<f64, InputError> {
        let v = self.number(row, col)?;
        if v < 0.0 {
            return Err(self.err(row, col, format!("must not be negative, got {v}")));
        }
        Ok(v)
    }

    /// Timestamps of column `col`, checked never to go backwards.
    pub fn timestamps(&self, col: usize) -> Result<Vec<f64>, InputError> {
        let mut out: Vec<f64> = Vec::with_capacity(self.rows.len());
        for row in 0..self.rows.len() {
            let t = self.number(row, col)?;
            if let Some(prev) = out.last() {
                if t < *prev {
                    return Err(self.err(
                        row,
                        col,
                        format!("timestamp {t} goes backwards (previous row: {prev})"),
                    ));
                }
            }
            out.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_row_and_column() {
        let e = Table::parse("f.csv", "", "t").unwrap_err();
        assert_eq!((e.row, e.column.as_str()), (1, "t"));
        let e = Table::parse("f.csv", "t,v\n", "t").unwrap_err();
        assert_eq!((e.row, e.column.as_str()), (2, "t"));
        let t = Table::parse("f.csv", "t,v\n1,2\n2,NaN\n1,3\n", "t").unwrap();
        let v = t.column("v").unwrap();
        assert_eq!(t.number(0, v).unwrap(), 2.0);
        let e = t.number(1, v).unwrap_err();
        assert_eq!((e.row, e.column.as_str()), (3, "v"));
        assert!(e
            .to_string()
            .starts_with("f.csv: row 3, column \"v\": not a finite"));
        let e = t.timestamps(0).unwrap_err();
        assert_eq!((e.row, e.column.as_str()), (4, "t"));
        let e = t.column("p95").unwrap_err();
        assert_eq!((e.row, e.column.as_str()), (1, "p95"));
        let e = Table::parse("f.csv", "t,v\n1\n", "t").unwrap_err();
        assert_eq!(e.row, 2);
    }
}
