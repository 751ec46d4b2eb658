//! Suggestions for error messages: edit distance, the closest keyword or metric to a
//! misspelt word ("did you mean"), and near-misses of a built-in metric name.

use super::token::MAX_SHOWN_CHARS;
use super::types::BUILTIN_METRICS;

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), in chars.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            let mut best = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                best = best.min(before[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word` (compared in lowercase), if it is within
/// edit distance 2 (1 for candidates of 3 characters or fewer).
pub(super) fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    if word.chars().count() > MAX_SHOWN_CHARS {
        return None;
    }
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .filter_map(|&candidate| {
            let distance = edit_distance(&word, candidate);
            let max = if candidate.len() <= 3 { 1 } else { 2 };
            (distance <= max).then(|| ((distance, letter_difference(&word, candidate)), candidate))
        })
        .min_by_key(|&(rank, _)| rank)
        .map(|(_, candidate)| candidate)
}

/// How many characters the two strings do not share, ignoring order: breaks
/// ties between equally distant candidates in favour of a transposition
/// (`p59_latency` is closer to `p95_latency` than to `p50_latency`).
fn letter_difference(a: &str, b: &str) -> usize {
    let mut unmatched: Vec<char> = b.chars().collect();
    let mut missing = 0;
    for c in a.chars() {
        match unmatched.iter().position(|&u| u == c) {
            Some(index) => {
                unmatched.swap_remove(index);
            }
            None => missing += 1,
        }
    }
    missing + unmatched.len()
}

/// `"; did you mean `x`?"`, or nothing.
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates).map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

/// The built-in metric a syntactically valid custom name is a near-miss of:
/// within edit distance 2 of a built-in name of 7 characters or more (so
/// `p59_latency` and `inflight` are typos, but `qps` is a custom metric).
pub(super) fn near_builtin(name: &str) -> Option<&'static str> {
    BUILTIN_METRICS
        .iter()
        .filter(|builtin| builtin.len() >= 7)
        .map(|&builtin| {
            let rank = (
                edit_distance(name, builtin),
                letter_difference(name, builtin),
            );
            (rank, builtin)
        })
        .filter(|&((distance, _), _)| distance <= 2)
        .min_by_key(|&(rank, _)| rank)
        .map(|(_, builtin)| builtin)
}

/// `" (keywords are lowercase)"` when `text` is a keyword in the wrong case.
pub(super) fn lowercase_hint(text: &str, keywords: &[&str]) -> &'static str {
    let lower = text.to_ascii_lowercase();
    if lower != text && keywords.contains(&lower.as_str()) {
        " (keywords are lowercase)"
    } else {
        ""
    }
}
