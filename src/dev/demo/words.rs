//! The demo's small vocabulary: titles and sentences by the mood a rating suggests, and
//! spam that the fraud model should catch (a link or an e-mail address, on reserved
//! example domains so nothing real is advertised).

pub const POSITIVE_TITLES: &[&str] = &[
    "Great course",
    "Exactly what I needed",
    "Clear and practical",
    "Highly recommended",
    "Excellent instructor",
    "Worth every minute",
    "Best course on the topic",
];

pub const MIXED_TITLES: &[&str] = &[
    "Good but uneven",
    "Decent overview",
    "Some parts drag",
    "Fine for beginners",
];

pub const NEGATIVE_TITLES: &[&str] = &[
    "Disappointing",
    "Too shallow",
    "Outdated material",
    "Hard to follow",
];

pub const POSITIVE_SENTENCES: &[&str] = &[
    "The explanations are clear and well paced.",
    "The exercises made the concepts stick.",
    "The instructor answers questions quickly.",
    "I used what I learned at work the next day.",
    "A good balance of theory and practice.",
    "The projects feel like real work.",
    "Every section builds on the one before.",
];

pub const MIXED_SENTENCES: &[&str] = &[
    "Some sections are excellent, others feel rushed.",
    "The audio could be better.",
    "Good content, but the pace is slow at times.",
    "A few examples are out of date.",
    "I wish there were more exercises.",
];

pub const NEGATIVE_SENTENCES: &[&str] = &[
    "The videos skip important steps.",
    "Most of the material is a reading of the documentation.",
    "The code samples do not run as shown.",
    "The instructor reads from the slides.",
    "Questions in the forum stay unanswered.",
];

/// `{n}` is replaced by a number, so spam is not one repeated text.
pub const SPAM: &[&str] = &[
    "Get this course for free at http://free-courses.example.com/{n}",
    "Cheap certificates, write to deals{n}@example.net",
    "Visit www.course-discounts.example.org/{n} for 90% off every course",
    "Great course! Contact me at tutor{n}@example.com for private lessons",
];

/// Course titles are a format around a topic: with 10 of each, the default 50 courses all
/// get distinct titles (see `generate::course_title`).
pub const TOPICS: &[&str] = &[
    "Rust",
    "PostgreSQL",
    "Apache Kafka",
    "Python",
    "Data Engineering",
    "Web Accessibility",
    "Linux Administration",
    "Machine Learning",
    "TypeScript",
    "Distributed Systems",
];

/// `{}` is the topic.
pub const COURSE_FORMATS: &[&str] = &[
    "{} for Beginners",
    "Advanced {}",
    "{} in Practice",
    "The Complete {} Bootcamp",
    "{}: From Zero to Production",
];
