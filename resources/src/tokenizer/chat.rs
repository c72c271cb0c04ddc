//! Chat templates (`tokenizer.chat_template`), rendered with minijinja the way Hugging Face
//! `apply_chat_template` renders them with jinja2: `trim_blocks` and `lstrip_blocks` on,
//! loop controls, Python string methods (`.strip()`, `.startswith()`, ...), `tojson`,
//! `raise_exception(msg)` and `strftime_now(fmt)`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, syntax::SyntaxConfig};

use super::TokenizerError;

/// Fuel a render may use (minijinja: one per instruction, plus one per 64 bytes of data
/// produced or processed), on top of [`FUEL_PER_INPUT_BYTE`] per byte of template and
/// messages. Real chat templates need some 40-200 per message plus the bytes they write
/// (Qwen2.5: 32k for 200 messages of 2 kB); a template from an untrusted file must not be
/// able to loop or allocate without bound (this stops one after about 0.1 s).
const FUEL_BASE: u64 = 1_000_000;
/// Extra fuel per byte of template and message text, so long conversations always fit.
const FUEL_PER_INPUT_BYTE: u64 = 4;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    fn to_value(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert("role".to_string(), Value::from(self.role.as_str()));
        m.insert("content".to_string(), Value::from(self.content.as_str()));
        Value::from(m)
    }
}

/// Renders a chat template for `messages`. `bos` / `eos` are the texts bound to
/// `bos_token` / `eos_token`; `add_generation_prompt` asks for the assistant turn header.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String, TokenizerError> {
    let err = |e: Error| TokenizerError::Template(format_error(&e));
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .map_err(err)?;
    env.set_syntax(syntax);
    let input_bytes = template.len()
        + messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
        + bos.len()
        + eos.len();
    env.set_fuel(Some(FUEL_BASE.saturating_add(
        (input_bytes as u64).saturating_mul(FUEL_PER_INPUT_BYTE),
    )));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    let messages: Vec<Value> = messages.iter().map(ChatMessage::to_value).collect();
    let ctx = minijinja::context! {
        messages => Value::from(messages),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    };
    let tmpl = env.template_from_str(template).map_err(err)?;
    tmpl.render(ctx).map_err(err)
}

fn format_error(e: &Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Calendar date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day count since 1970-01-01 of a calendar date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A subset of C `strftime` over a UTC Unix time: `%Y %y %m %d %e %j %B %b %h %A %a %H %I
/// %M %S %p %%`, with glibc's `%-d`-style "no padding" flag. Unknown conversions are kept.
fn strftime(format: &str, unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60,
    );
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let no_pad = spec == Some('-');
        if no_pad {
            spec = chars.next();
        }
        let num = |v: u64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        match spec {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100) as u64, 2)),
            Some('m') => out.push_str(&num(month as u64, 2)),
            Some('d') => out.push_str(&num(day as u64, 2)),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('j') => out.push_str(&num(yday as u64, 3)),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&num(hour, 2)),
            Some('I') => out.push_str(&num(if hour % 12 == 0 { 12 } else { hour % 12 }, 2)),
            Some('M') => out.push_str(&num(minute, 2)),
            Some('S') => out.push_str(&num(second, 2)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 13:25:09 UTC, a Friday, day 208
        let t = 1_722_000_309;
        assert_eq!(strftime("%d %B %Y", t), "26 July 2024");
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %j %p %-d/%-m %%", t),
            "2024-07-26 13:25:09 Fri 208 PM 26/7 %"
        );
        assert_eq!(strftime("%b %e %y", 0), "Jan  1 70");
    }

    #[test]
    fn renders_python_style_templates() {
        let tmpl = "{% for m in messages %}{{ m.role | upper }}:{{ m.content.strip() }}\n{% endfor %}\
                    {% if add_generation_prompt %}{{ bos_token }}>{% endif %}";
        let msgs = [
            ChatMessage::new("user", "  hi  "),
            ChatMessage::new("assistant", "yo"),
        ];
        let s = render_chat_template(tmpl, &msgs, true, "<s>", "</s>").unwrap();
        assert_eq!(s, "USER:hi\nASSISTANT:yo\n<s>>");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let tmpl = "A\n  {% if true %}\nB\n  {% endif %}\nC\n";
        let s = render_chat_template(tmpl, &[], false, "", "").unwrap();
        assert_eq!(s, "A\nB\nC");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let r = render_chat_template("{{ raise_exception('bad role') }}", &[], false, "", "");
        match r {
            Err(TokenizerError::Template(msg)) => assert!(msg.contains("bad role"), "{msg}"),
            other => panic!("expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn tojson_and_loop_controls() {
        let tmpl = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m | tojson }}{% endfor %}";
        let msgs = [
            ChatMessage::new("user", "a\"b"),
            ChatMessage::new("user", "c"),
        ];
        let s = render_chat_template(tmpl, &msgs, false, "", "").unwrap();
        assert_eq!(s, r#"{"content": "a\"b", "role": "user"}"#);
    }
}
