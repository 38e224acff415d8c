//! Properties of the numeric parsers a user's flags go through: any text is a value or a
//! clear error (never a panic, never an unbounded list), and what parses is what was meant.

use lcross_core::steer::{parse_layers, parse_positions, Beta, MAX_LAYERS};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any text: a bounded list or an error.
    #[test]
    fn layers_of_any_text_are_bounded_or_refused(s in "[0-9 ,\\-]{0,40}|\\PC{0,20}") {
        if let Ok(layers) = parse_layers(&s) {
            prop_assert!(!layers.is_empty() && layers.len() <= MAX_LAYERS);
            prop_assert!(layers.iter().all(|&l| l < MAX_LAYERS));
        }
    }

    /// Lists and ranges written out parse to exactly their layers, in order.
    #[test]
    fn written_layers_parse_to_themselves(parts in proptest::collection::vec((0usize..200, 0usize..5), 1..6)) {
        let mut text = Vec::new();
        let mut expected = Vec::new();
        for (start, len) in &parts {
            if *len == 0 {
                text.push(start.to_string());
                expected.push(*start);
            } else {
                text.push(format!("{start}-{}", start + len));
                expected.extend(*start..=start + len);
            }
        }
        prop_assert_eq!(parse_layers(&text.join(",")).unwrap(), expected);
    }

    /// Huge numbers (past usize, past the bound) are refused, not expanded or wrapped.
    #[test]
    fn huge_layers_are_refused(low in 0u64..10, high in (MAX_LAYERS as u64)..u64::MAX, extra in "[0-9]{0,25}") {
        let text = format!("{low}-{high}");
        prop_assert!(parse_layers(&text).is_err(), "{}", text);
        let text = format!("{high}{extra}");
        prop_assert!(parse_layers(&text).is_err(), "{}", text);
    }

    /// A beta is a number within f32's range or `auto`; everything else is an error.
    #[test]
    fn betas_are_finite_within_f32_or_refused(x in proptest::num::f64::ANY, s in "\\PC{0,12}") {
        match Beta::parse(&x.to_string()) {
            Ok(Beta::Value(v)) => prop_assert!(v.is_finite() && v.abs() <= f32::MAX as f64 && v == x),
            Ok(Beta::Auto) => prop_assert!(false, "{x} parsed as auto"),
            Err(_) => prop_assert!(!x.is_finite() || x.abs() > f32::MAX as f64),
        }
        if let Ok(Beta::Value(v)) = Beta::parse(&s) {
            prop_assert!(v.is_finite() && v.abs() <= f32::MAX as f64);
        }
    }

    /// Positions: any text parses or is refused; `from:N` keeps N exactly.
    #[test]
    fn positions_never_panic(s in "\\PC{0,16}", n in any::<usize>()) {
        let _ = parse_positions(&s);
        prop_assert_eq!(parse_positions(&format!("from:{n}")).unwrap(), lcross_model::Positions::From(n));
    }
}
