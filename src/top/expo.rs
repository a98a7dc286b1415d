//! A parser for the Prometheus text exposition format (0.0.4), the inspector's input: every
//! sample line becomes (name, labels, value); comments are skipped. Strict: a line that is not a
//! sample is an error naming the line, so a page that is not Prometheus text (an HTML page, a
//! proxy's error) is reported as such instead of showing an empty view.

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole page. `Err` names the first bad line (1-based) and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(s) => out.push(s),
            Err(e) => {
                let shown: String = line.chars().take(60).collect();
                return Err(format!(
                    "not Prometheus text: line {}: {e}: `{shown}`",
                    i + 1
                ));
            }
        }
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    let mut it = n.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("not a metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = parse_labels(r)?;
        labels = l;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let v = fields.next().ok_or("no value")?;
    let value = parse_value(v).ok_or("the value is not a number")?;
    // An optional timestamp (milliseconds).
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

type Labels = Vec<(String, String)>;

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = s.find('=').ok_or("a label without `=`")?;
        let key = s[..eq].trim();
        if !valid_name(key) {
            return Err("not a label name");
        }
        let r = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut val = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, c)) => val.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => val.push(c),
            }
        };
        out.push((key.to_string(), val));
        s = r[end + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err("labels not separated by `,`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_escapes() {
        let page = "# HELP x y\n# TYPE a counter\na_total 3\nb{x=\"1\",y=\"a\\\"b\\\\c\\nd\"} 2.5\nc{} +Inf 1700000000000\nd{le=\"+Inf\",} NaN\n";
        let s = parse(page).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("x"), Some("1"));
        assert_eq!(s[1].label("y"), Some("a\"b\\c\nd"));
        assert_eq!(s[1].value, 2.5);
        assert!(s[2].value.is_infinite());
        assert_eq!(s[3].label("le"), Some("+Inf"));
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn not_prometheus_text_is_named() {
        let e = parse("<!DOCTYPE html>\n<html>").unwrap_err();
        assert!(e.starts_with("not Prometheus text: line 1:"), "{e}");
        let e = parse("ok 1\nx{a=\"1\" 2\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse("x{a=\"1\"} one\n").unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        assert!(parse("x{a=\"1} 1\n").is_err());
        assert!(parse("x 1 2 3\n").is_err());
    }
}
