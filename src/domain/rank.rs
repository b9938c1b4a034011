//! Fractional ordering keys for cards in a column. A key is a string over a base-62
//! alphabet whose byte order is its numeric order; between any two distinct keys there
//! is always another, so a card can be placed anywhere without renumbering the others.

const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: usize = 62;

fn value(c: u8) -> Option<usize> {
    DIGITS.iter().position(|&d| d == c)
}

/// Is `s` a key this module could have produced (non-empty, valid digits, no trailing
/// zero digit, which would make it equal in value to a shorter key)?
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| value(c).is_some()) && !s.ends_with('0')
}

/// A key strictly between `lo` and `hi` (either may be open). Returns `None` when the
/// bounds are invalid or not in increasing order.
pub fn between(lo: Option<&str>, hi: Option<&str>) -> Option<String> {
    let lo = lo.unwrap_or("");
    if !lo.is_empty() && !is_valid(lo) {
        return None;
    }
    if let Some(h) = hi {
        if !is_valid(h) || (!lo.is_empty() && lo >= h) {
            return None;
        }
    }
    let lo: Vec<usize> = lo.bytes().filter_map(value).collect();
    let hi: Option<Vec<usize>> = hi.map(|h| h.bytes().filter_map(value).collect());
    // At an open end, step by one digit instead of halving the gap: appending or
    // prepending repeatedly then grows keys by a digit every ~30 cards, not every ~6.
    let digits = match (&lo[..], hi.as_deref()) {
        // After `lo`: raise its first digit that can be raised (keeping the prefix).
        ([_, ..], None) => match lo.iter().position(|d| d + 1 < BASE) {
            Some(i) => lo[..i].iter().copied().chain([lo[i] + 1]).collect(),
            None => lo.iter().copied().chain([BASE / 2]).collect(),
        },
        // Before `hi`: lower its first digit that can be lowered without ending in 0.
        ([], Some(h)) => match h.iter().position(|d| *d > 1) {
            Some(i) => h[..i].iter().copied().chain([h[i] - 1]).collect(),
            None => midpoint(&lo, Some(h)),
        },
        (_, hi) => midpoint(&lo, hi),
    };
    Some(digits.into_iter().map(|d| DIGITS[d] as char).collect())
}

/// `n` short keys in increasing order, evenly spread over the middle half of the key
/// space so that there is room before, between and after them: a rebalanced column.
pub fn spread(n: usize) -> Vec<String> {
    // Enough digits that neighbours are at least a few apart.
    let mut len = 1;
    while BASE.pow(len as u32) < 4 * (n + 1) {
        len += 1;
    }
    let space = BASE.pow(len as u32);
    (1..=n)
        .map(|i| {
            let mut v = space / 4 + i * (space / 2) / (n + 1);
            let mut digits = vec![0; len];
            for d in digits.iter_mut().rev() {
                *d = v % BASE;
                v /= BASE;
            }
            while digits.len() > 1 && digits.last() == Some(&0) {
                digits.pop();
            }
            digits.into_iter().map(|d| DIGITS[d] as char).collect()
        })
        .collect()
}

/// Digits of a fraction strictly between `lo` (missing digits read as 0) and `hi`
/// (`None` reads as 1.0). Walks the common prefix, then either picks a digit halfway
/// between the first differing digits or, when they are adjacent, keeps `lo`'s digit
/// and recurses on the remainder with an open upper bound.
fn midpoint(lo: &[usize], hi: Option<&[usize]>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut hi = hi;
    loop {
        let a = lo.get(i).copied().unwrap_or(0);
        let b = match hi {
            Some(h) => match h.get(i) {
                Some(&b) => b,
                // `hi` ran out while equal to `lo`'s prefix: impossible for lo < hi.
                None => BASE,
            },
            None => BASE,
        };
        if a == b {
            out.push(a);
            i += 1;
            continue;
        }
        if b - a > 1 {
            out.push((a + b) / 2);
            return out;
        }
        // Adjacent digits: if `hi` has more digits, its first differing digit alone is
        // already above `lo` and below `hi`.
        if let Some(h) = hi {
            if h.len() > i + 1 {
                out.push(b);
                return out;
            }
        }
        out.push(a);
        i += 1;
        hi = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_between_two_keys_sorts_between_them() {
        let a = between(None, None).unwrap();
        let b = between(Some(&a), None).unwrap();
        let m = between(Some(&a), Some(&b)).unwrap();
        assert!(a < m && m < b, "{a} {m} {b}");
        let first = between(None, Some(&a)).unwrap();
        assert!(first < a);
    }

    #[test]
    fn thousands_of_inserts_between_the_same_neighbours_never_collide() {
        let lo = between(None, None).unwrap();
        let mut hi = between(Some(&lo), None).unwrap();
        for _ in 0..2000 {
            let m = between(Some(&lo), Some(&hi)).unwrap();
            assert!(lo < m && m < hi && is_valid(&m));
            hi = m;
        }
        // Each insert halves the gap; a base-62 digit holds almost six halvings, and
        // rounding at each step costs a little of that.
        assert!(hi.len() <= 2000 / 4, "keys grow by about one digit per five inserts: {}", hi.len());
    }

    #[test]
    fn appending_repeatedly_keeps_increasing() {
        let mut k = between(None, None).unwrap();
        for _ in 0..5000 {
            let n = between(Some(&k), None).unwrap();
            assert!(n > k);
            k = n;
        }
    }

    #[test]
    fn appending_a_thousand_cards_keeps_keys_short() {
        let mut k = between(None, None).unwrap();
        for _ in 0..1000 {
            k = between(Some(&k), None).unwrap();
        }
        assert!(k.len() <= 40, "{}", k.len());
        let mut k = between(None, None).unwrap();
        for _ in 0..1000 {
            let p = between(None, Some(&k)).unwrap();
            assert!(p < k && is_valid(&p));
            k = p;
        }
    }

    #[test]
    fn spread_keys_are_valid_increasing_and_leave_room_at_both_ends() {
        for n in [1, 2, 10, 61, 62, 500, 5000] {
            let keys = spread(n);
            assert_eq!(keys.len(), n);
            assert!(keys.iter().all(|k| is_valid(k) && k.len() <= 3), "{n}");
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{n}");
            assert!(between(None, Some(&keys[0])).is_some() && between(Some(&keys[n - 1]), None).is_some());
        }
    }

    #[test]
    fn bounds_out_of_order_are_refused() {
        assert_eq!(between(Some("b"), Some("a")), None);
        assert_eq!(between(Some("a0"), None), None);
    }
}
