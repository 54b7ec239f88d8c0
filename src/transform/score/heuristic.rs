//! The `heuristic` scorer (the default): an explainable score from signals inside the text a
//! reviewer wrote (title and content) and the rating. Like every scorer it is a pure function
//! of the row, so the verdict of an old image can be recomputed.
//!
//! Each signal that fires adds its weight w: score = 1 - Π(1 - w). The weights are set so that
//! one strong signal (a link, an e-mail address, a phone number) crosses 0.5 on its own, while
//! a weak one (shouting, repeated characters, ...) needs company. The signals are scanned
//! char by char, never by byte index, so no text can make them panic.

use std::collections::HashMap;

use super::{Judgement, Scorer};
use crate::contract::image::ReviewRow;

/// Bump when a signal or weight changes: old verdicts were made by the old function.
const VERSION: &str = "heuristic-v1";

/// (reason, weight), strongest first; the order of the reasons in a judgement.
const LINK: (&str, f64) = ("link", 0.7);
const EMAIL: (&str, f64) = ("email", 0.7);
const PHONE: (&str, f64) = ("phone", 0.6);
const PROMOTION: (&str, f64) = ("promotion", 0.35);
const EMPTY_EXTREME_RATING: (&str, f64) = ("empty_extreme_rating", 0.3);
const REPEATED_WORDS: (&str, f64) = ("repeated_words", 0.25);
const SHOUTING: (&str, f64) = ("shouting", 0.25);
const REPEATED_CHARS: (&str, f64) = ("repeated_chars", 0.2);

/// Top-level domains that make `word.tld` a link wherever it appears.
const DOMAINS: &[&str] = &["com", "org", "info", "biz", "xyz", "ru", "cn", "ly"];
/// Domains that are also tech names (ASP.NET, Socket.io, ...): a link only with a path after.
const DOMAINS_WITH_PATH: &[&str] = &["net", "io", "dev", "app", "ai", "co", "me"];

/// Matched at the start of a word, in lower case.
const PROMOTIONS: &[&str] = &[
    "coupon",
    "discount",
    "promo code",
    "use code",
    "free download",
    "buy now",
    "click here",
    "visit my",
    "check out my",
    "subscribe to my",
    "dm me",
];

pub struct HeuristicScorer {
    threshold: f64,
    model: String,
}

impl HeuristicScorer {
    /// `threshold` in (0, 1]; [`super::scorer`] checks it.
    pub fn new(threshold: f64) -> Self {
        HeuristicScorer {
            threshold,
            model: format!("{VERSION}@{threshold}"),
        }
    }
}

impl Scorer for HeuristicScorer {
    fn model(&self) -> &str {
        &self.model
    }

    fn judge(&self, review: &ReviewRow) -> Judgement {
        let mut fired = signals(review);
        fired.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let score = 1.0 - fired.iter().map(|(_, w)| 1.0 - w).product::<f64>();
        Judgement {
            fraud: score >= self.threshold,
            score,
            reasons: fired.iter().map(|(name, _)| name.to_string()).collect(),
        }
    }
}

fn signals(review: &ReviewRow) -> Vec<(&'static str, f64)> {
    let texts: Vec<&str> = [&review.title, &review.content]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    let any_lowered = |signal: fn(&str) -> bool| lowered.iter().any(|t| signal(t));
    let mut fired = Vec::new();
    if any_lowered(has_link) {
        fired.push(LINK);
    }
    if any_lowered(has_email) {
        fired.push(EMAIL);
    }
    if texts.iter().any(|t| has_phone(t)) {
        fired.push(PHONE);
    }
    if any_lowered(has_promotion) {
        fired.push(PROMOTION);
    }
    let words: usize = texts.iter().map(|t| word_count(t)).sum();
    if words < 3 && matches!(review.rating.halves(), 1 | 2 | 10) {
        fired.push(EMPTY_EXTREME_RATING);
    }
    if any_lowered(has_repeated_words) {
        fired.push(REPEATED_WORDS);
    }
    if is_shouting(&texts) {
        fired.push(SHOUTING);
    }
    if any_lowered(has_repeated_chars) {
        fired.push(REPEATED_CHARS);
    }
    fired
}

/// Whether `needle` occurs where a word starts, so "visit my" does not match "revisit my".
fn at_word_start(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
    })
}

/// Whitespace-separated tokens without the punctuation that wraps them in prose.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().map(|token| {
        token
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .trim_end_matches(|c: char| ".,;:!?)]}>\"'".contains(c))
    })
}

fn has_link(lower: &str) -> bool {
    ["http://", "https://", "www."]
        .iter()
        .any(|scheme| at_word_start(lower, scheme))
        || tokens(lower).any(is_bare_domain)
}

fn is_bare_domain(token: &str) -> bool {
    let end = token.find(['/', ':', '?', '#']).unwrap_or(token.len());
    let (host, rest) = token.split_at(end);
    let Some(tld) = domain_tld(host) else {
        return false;
    };
    DOMAINS.contains(&tld) || (!rest.is_empty() && DOMAINS_WITH_PATH.contains(&tld))
}

/// The top-level label of `host` if it is shaped like a domain name (`label.label...`).
fn domain_tld(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    let tld = labels.next_back()?;
    let mut count = 1;
    for label in labels {
        if label.is_empty() || !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return None;
        }
        count += 1;
    }
    (count >= 2 && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())).then_some(tld)
}

fn has_email(lower: &str) -> bool {
    tokens(lower).any(|token| {
        let Some((local, domain)) = token.split_once('@') else {
            return false;
        };
        local.chars().any(char::is_alphanumeric)
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "._%+-".contains(c))
            && domain_tld(domain).is_some()
    })
}

fn has_promotion(lower: &str) -> bool {
    PROMOTIONS.iter().any(|phrase| at_word_start(lower, phrase))
}

fn word_count(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

/// The same word 3+ times in a row, or one word over half of a text of 6+ words.
fn has_repeated_words(lower: &str) -> bool {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let (mut previous, mut run, mut total) = ("", 0, 0);
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        run = if word == previous { run + 1 } else { 1 };
        if run >= 3 {
            return true;
        }
        previous = word;
        total += 1;
        *counts.entry(word).or_default() += 1;
    }
    total >= 6 && counts.values().any(|&n| n * 2 > total)
}

/// At least 10 cased letters, over 70% of them upper case. Letters without case (CJK, ...)
/// neither shout nor dilute.
fn is_shouting(texts: &[&str]) -> bool {
    let (mut upper, mut cased) = (0usize, 0usize);
    for c in texts.iter().flat_map(|t| t.chars()) {
        if c.is_uppercase() {
            upper += 1;
            cased += 1;
        } else if c.is_lowercase() {
            cased += 1;
        }
    }
    cased >= 10 && upper * 10 > cased * 7
}

/// The same character 5+ times in a row ("!!!!!", "soooooo"). Digits and whitespace do not
/// count: "1000000" and indentation are not emphasis.
fn has_repeated_chars(lower: &str) -> bool {
    let (mut previous, mut run) = ('\0', 0);
    for c in lower.chars() {
        if c.is_whitespace() || c.is_ascii_digit() {
            run = 0;
            continue;
        }
        run = if run > 0 && c == previous { run + 1 } else { 1 };
        if run >= 5 {
            return true;
        }
        previous = c;
    }
    false
}

/// Seven or more digits in at most five groups, separated by a few spaces, dashes, dots,
/// parentheses or a leading plus: "+1 (555) 123-4567", "555-1234", "01 23 45 67 89".
fn has_phone(text: &str) -> bool {
    let mut run = DigitRun::default();
    for c in text.chars() {
        if c.is_ascii_digit() {
            if run.gap > MAX_GAP {
                if run.is_phone() {
                    return true;
                }
                run = DigitRun::default();
            }
            run.push_digit(c);
        } else if matches!(c, ' ' | '-' | '.' | '(' | ')' | '+') {
            run.gap = run.gap.saturating_add(1);
            run.gap_is_dot = run.gap == 1 && c == '.';
        } else {
            if run.is_phone() {
                return true;
            }
            run = DigitRun::default();
        }
    }
    run.is_phone()
}

/// Separator characters allowed between two digit groups, as in "555 - 1234" or "(555) 123".
const MAX_GAP: usize = 3;
const MAX_GROUPS: usize = 5;
/// E.164 has at most 15 digits; a longer run is some other number.
const MAX_PHONE_DIGITS: usize = 15;

#[derive(Default)]
struct DigitRun {
    /// The first MAX_GROUPS groups, enough to judge the run; memory stays bounded
    /// whatever the text.
    groups: Vec<String>,
    group_count: usize,
    digits: usize,
    /// Separators since the last digit.
    gap: usize,
    gap_is_dot: bool,
    /// Every gap so far was a single '.': with 2, 4 or 5 groups, a decimal, an IP address or
    /// a version.
    only_dots: bool,
}

impl DigitRun {
    fn push_digit(&mut self, c: char) {
        if self.group_count == 0 {
            self.only_dots = true;
            self.new_group();
        } else if self.gap > 0 {
            self.only_dots &= self.gap_is_dot;
            self.new_group();
        }
        self.gap = 0;
        self.digits = self.digits.saturating_add(1);
        if self.digits <= MAX_PHONE_DIGITS && self.group_count <= MAX_GROUPS {
            if let Some(group) = self.groups.last_mut() {
                group.push(c);
            }
        }
    }

    fn new_group(&mut self) {
        self.group_count = self.group_count.saturating_add(1);
        if self.group_count <= MAX_GROUPS {
            self.groups.push(String::new());
        }
    }

    fn is_phone(&self) -> bool {
        (7..=MAX_PHONE_DIGITS).contains(&self.digits)
            && self.group_count <= MAX_GROUPS
            // "123.456.7890" is a phone; "3.14159265", "192.168.10.1" and "1.2.3.4567" are not.
            && !(self.only_dots && self.group_count != 1 && self.group_count != 3)
            && !self.is_date()
            // "1000000", "10 000 000": counts of students, views, ...
            && !self.groups.last().is_some_and(|g| g.ends_with("000"))
    }

    /// "2023-01-15", "15.01.2023", "2019 - 2023": years and one- or two-digit days and months.
    fn is_date(&self) -> bool {
        let is_year =
            |g: &String| g.len() == 4 && g.parse::<u16>().is_ok_and(|y| (1900..=2099).contains(&y));
        self.groups.iter().any(is_year) && self.groups.iter().all(|g| g.len() <= 2 || is_year(g))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::contract::review::Rating;

    fn row(title: Option<&str>, content: Option<&str>, halves: u8) -> ReviewRow {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        ReviewRow {
            id: 1,
            course_id: 2,
            user_id: Some(3),
            rating: Rating::from_halves(halves).unwrap(),
            title: title.map(Into::into),
            content: content.map(Into::into),
            created_at: at,
            updated_at: Some(at),
        }
    }

    fn judge(content: &str) -> Judgement {
        HeuristicScorer::new(0.5).judge(&row(Some("My thoughts"), Some(content), 8))
    }

    fn reasons(content: &str) -> Vec<String> {
        judge(content).reasons
    }

    #[test]
    fn a_normal_review_scores_zero() {
        let j = judge("Great course, the instructor explains Rust lifetimes clearly.");
        assert_eq!(
            j,
            Judgement {
                fraud: false,
                score: 0.0,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn links() {
        for text in [
            "see http://spam.example for more",
            "HTTPS://Spam.Example/deal",
            "go to www.deals.test now",
            "best deals at example.com/course-deals",
            "(cheap-courses.ru)",
            "short link: bit.ly/abc",
            "our tool at cool.io/start",
        ] {
            assert_eq!(reasons(text), ["link"], "{text}");
            assert!(judge(text).fraud, "{text}");
        }
    }

    #[test]
    fn emails() {
        for text in [
            "write to john.doe+courses@mail.example.org",
            "Contact: (Sales@Example.CO)",
        ] {
            assert_eq!(reasons(text), ["email"], "{text}");
            assert!(judge(text).fraud, "{text}");
        }
    }

    #[test]
    fn phones() {
        for text in [
            "call +1 (555) 123-4567 today",
            "call 555-1234",
            "ring 555.123.4567",
            "appelez le 01 23 45 67 89",
            "+44 20 7946 0958",
            "whatsapp 5551234567",
            "call 555 - 1234 now",
        ] {
            assert_eq!(reasons(text), ["phone"], "{text}");
            assert!(judge(text).fraud, "{text}");
        }
    }

    #[test]
    fn numbers_in_ordinary_reviews_are_not_phones_or_links() {
        for text in [
            "lesson 12 was the best, and lessons 13 and 14 too",
            "works with version 3.5 and 3.10.2 of the library",
            "took it from 2019-2023, finished on 2023-01-15 (or 15.01.2023)",
            "my router is 192.168.10.1 and pi is 3.14159265",
            "over 1000000 students and 10 000 000 views",
            "chapters 1 2 3 4 5 6 7 8 were great",
            "e.g. Node.js, ASP.NET, Socket.io and README.md are covered",
            "Awww. I will revisit my notes. Rating 4.5/5.",
        ] {
            assert_eq!(reasons(text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn repeated_chars() {
        for text in ["This was soooooo good", "Wow!!!!!", "Greaaaaat teacher"] {
            assert_eq!(reasons(text), ["repeated_chars"], "{text}");
            assert!(!judge(text).fraud, "{text}");
        }
        assert_eq!(reasons("Sooo good!!!! really"), Vec::<String>::new());
    }

    #[test]
    fn repeated_words() {
        for text in [
            "good good good course",
            "best course best teacher best best",
        ] {
            assert_eq!(reasons(text), ["repeated_words"], "{text}");
            assert!(!judge(text).fraud, "{text}");
        }
        // Twice in a row is ordinary; so is half of a text.
        assert_eq!(
            reasons("very very good, the good parts are good"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn shouting() {
        let text = "THIS COURSE IS THE BEST I HAVE TAKEN";
        assert_eq!(reasons(text), ["shouting"]);
        assert!(!judge(text).fraud);
        // Acronyms inside a sentence, and too few letters to shout.
        assert_eq!(
            reasons("I liked the AWS and GCP parts"),
            Vec::<String>::new()
        );
        let short = HeuristicScorer::new(0.5).judge(&row(None, Some("OK GOOD"), 8));
        assert_eq!(short.reasons, Vec::<String>::new());
    }

    #[test]
    fn empty_text_with_an_extreme_rating() {
        let scorer = HeuristicScorer::new(0.5);
        for halves in [1, 2, 10] {
            for (title, content) in [(None, None), (Some("Great"), None), (Some(""), Some("!!"))] {
                let j = scorer.judge(&row(title, content, halves));
                assert_eq!(j.reasons, ["empty_extreme_rating"], "{halves} {title:?}");
                assert!(!j.fraud);
            }
        }
        for halves in [3, 5, 9] {
            assert!(scorer.judge(&row(None, None, halves)).reasons.is_empty());
        }
        let said_something = scorer.judge(&row(Some("Great"), Some("loved it"), 10));
        assert!(said_something.reasons.is_empty());
    }

    #[test]
    fn promotions() {
        for text in [
            "Get a 90% discount with promo code SAVE",
            "Click here for the coupon",
            "Visit my channel",
        ] {
            assert_eq!(reasons(text), ["promotion"], "{text}");
            assert!(!judge(text).fraud, "{text}");
        }
    }

    #[test]
    fn combined_signals_multiply_and_are_ordered_by_weight() {
        let j = judge("VISIT MY SITE CHEAP-COURSES.RU FOR A COUPON!!!!!");
        assert_eq!(
            j.reasons,
            ["link", "promotion", "shouting", "repeated_chars"]
        );
        let expected = 1.0 - (1.0 - 0.7) * (1.0 - 0.35) * (1.0 - 0.25) * (1.0 - 0.2);
        assert!((j.score - expected).abs() < 1e-12, "{}", j.score);
        assert!(j.fraud);

        // Equal weights: by name.
        assert_eq!(
            reasons("mail me@spam.example or spam.com"),
            ["email", "link"]
        );

        // Two weak signals stay below 0.5; a weak one with a promotion does not.
        let weak = judge("SOOOOO GOOD, BEST COURSE EVER");
        assert_eq!(weak.reasons, ["shouting", "repeated_chars"]);
        assert!(!weak.fraud);
        let promo = judge("USE CODE SAVE50 FOR THIS COURSE");
        assert_eq!(promo.reasons, ["promotion", "shouting"]);
        assert!(promo.fraud);
    }

    #[test]
    fn threshold_decides_fraud() {
        let review = row(None, Some("Click here: cheap-courses.ru"), 8);
        let score = HeuristicScorer::new(0.5).judge(&review).score;
        assert!(score > 0.8 && score < 0.81, "{score}");
        assert!(HeuristicScorer::new(0.5).judge(&review).fraud);
        assert!(HeuristicScorer::new(score).judge(&review).fraud);
        assert!(!HeuristicScorer::new(0.9).judge(&review).fraud);
        assert!(!HeuristicScorer::new(1.0).judge(&review).fraud);
        assert_eq!(HeuristicScorer::new(0.9).model(), "heuristic-v1@0.9");
    }

    #[test]
    fn any_text_is_judged_without_panicking() {
        let scorer = HeuristicScorer::new(0.5);
        let huge = "ß日本語🦀 ".repeat(200_000) + &"1 ".repeat(200_000) + &" ".repeat(100_000);
        for text in [
            "",
            "@",
            "@@.",
            ".",
            "İİİİİ",
            "e\u{301}e\u{301}e\u{301}",
            "\u{0}\u{fffd}\u{feff}",
            "+++++((((()))))-----",
            "www.",
            "a@b.",
            "日本語のレビュー。とても良いコースでした！",
            huge.as_str(),
        ] {
            let j = scorer.judge(&row(Some(text), Some(text), 10));
            assert!((0.0..=1.0).contains(&j.score), "{text:.40}");
        }
    }

    #[test]
    fn same_row_same_judgement() {
        let scorer = HeuristicScorer::new(0.5);
        let review = row(
            Some("AMAZING"),
            Some("call 555-1234, visit my site example.com!!!!!"),
            10,
        );
        let first = scorer.judge(&review);
        for _ in 0..100 {
            assert_eq!(scorer.judge(&review.clone()), first);
        }
        assert_eq!(HeuristicScorer::new(0.5).judge(&review), first);
    }
}
