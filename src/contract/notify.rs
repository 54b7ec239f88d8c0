//! The `course_stats` notification, the stats sink's word to the website: each stats
//! transaction that changes figures also runs `pg_notify('course_stats', ...)`
//! (`sink::stats::notify`), which PostgreSQL delivers to listeners only when (and if) the
//! transaction commits. The payload is the touched course ids, comma-separated, split over
//! several notifications when they would pass PostgreSQL's 8000-byte payload limit; `*` means
//! "any course may have changed" (a TRUNCATE emptied the tables). The api's listener
//! (`api::events`) reads them back with [`parse`].

/// The LISTEN/NOTIFY channel.
pub const CHANNEL: &str = "course_stats";

/// The payload meaning every course.
pub const ALL: &str = "*";

/// A payload stays below this many bytes (PostgreSQL refuses 8000 and more).
pub const MAX_PAYLOAD: usize = 7900;

/// What a stats transaction changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Every course (the tables were emptied).
    All,
    /// These courses.
    Courses(Vec<i64>),
}

/// The payloads announcing `touched`: none when nothing was touched.
pub fn payloads(touched: &Touched) -> Vec<String> {
    let courses = match touched {
        Touched::All => return vec![ALL.to_string()],
        Touched::Courses(courses) => courses,
    };
    let mut out = Vec::new();
    let mut current = String::new();
    for course in courses {
        let id = course.to_string();
        if !current.is_empty() && current.len() + 1 + id.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Reads a payload back; a payload that is neither `*` nor a list of ids counts as `*`, so a
/// listener refreshes too much rather than too little.
pub fn parse(payload: &str) -> Touched {
    let ids: Option<Vec<i64>> = payload
        .split(',')
        .map(|id| id.trim().parse().ok())
        .collect();
    match ids {
        Some(ids) if payload.trim() != ALL => Touched::Courses(ids),
        _ => Touched::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let touched = Touched::Courses(vec![1, 42, -3, i64::MAX]);
        let payloads = payloads(&touched);
        assert_eq!(payloads, vec![format!("1,42,-3,{}", i64::MAX)]);
        assert_eq!(parse(&payloads[0]), touched);
        assert_eq!(payloads_of(Touched::All), vec!["*"]);
        assert_eq!(parse("*"), Touched::All);
        assert!(payloads_of(Touched::Courses(vec![])).is_empty());
    }

    fn payloads_of(t: Touched) -> Vec<String> {
        payloads(&t)
    }

    #[test]
    fn many_courses_are_split_below_the_limit_and_none_is_lost() {
        let courses: Vec<i64> = (0..5000).map(|i| i64::MAX - i).collect();
        let payloads = payloads(&Touched::Courses(courses.clone()));
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<i64> = payloads
            .iter()
            .flat_map(|p| match parse(p) {
                Touched::Courses(c) => c,
                Touched::All => panic!("{p} read as *"),
            })
            .collect();
        assert_eq!(back, courses);
    }

    #[test]
    fn garbage_means_everything() {
        assert_eq!(parse("1,x"), Touched::All);
        assert_eq!(parse(""), Touched::All);
    }
}
