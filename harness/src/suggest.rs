//! "Did you mean" suggestions for names a user mistyped (attacks, stages, config keys).

/// The candidate closest to `wanted` by edit distance, when it is close enough to be a
/// plausible typo.
pub fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= (c.len().max(wanted.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or nothing.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(wanted, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_suggests_plausible_typos_only() {
        let names = ["loss", "zlib", "mink", "minkpp", "ref"];
        assert_eq!(nearest("minkpq", names), Some("minkpp"));
        assert_eq!(nearest("zlb", names), Some("zlib"));
        assert_eq!(nearest("completely_different", names), None);
    }
}
