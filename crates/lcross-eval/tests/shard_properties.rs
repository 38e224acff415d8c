//! Properties of `--shard i/n` and of the split of a grid into shards: any text is a
//! shard or a clear error; every group runs on exactly one shard of any count.

use lcross_eval::reproduce::config::VectorKind;
use lcross_eval::reproduce::grid::{Group, Shard, MAX_SHARDS};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_shard_or_refused(s in "[0-9 /]{0,30}|\\PC{0,16}") {
        if let Ok(sh) = Shard::parse(&s) {
            prop_assert!(sh.index < sh.count && sh.count <= MAX_SHARDS);
        }
    }

    #[test]
    fn written_shards_parse_and_absurd_counts_are_refused(n in 1usize..=MAX_SHARDS, i in any::<usize>(), huge in (MAX_SHARDS as u64 + 1)..u64::MAX) {
        let i = i % n;
        prop_assert_eq!(Shard::parse(&format!("{i}/{n}")).unwrap(), Shard { index: i, count: n });
        let text = format!("{n}/{n}");
        prop_assert!(Shard::parse(&text).is_err(), "{}", text);
        let text = format!("0/{huge}");
        prop_assert!(Shard::parse(&text).is_err(), "{}", text);
        let text = format!("0/{huge}0000000000000000000000");
        prop_assert!(Shard::parse(&text).is_err(), "{}", text);
    }

    /// Every group is owned by exactly one shard of `n`, whatever its names.
    #[test]
    fn every_group_runs_on_exactly_one_shard(target in "\\PC{0,12}", concept in "\\PC{0,12}", source in proptest::option::of("\\PC{0,8}"), n in 1usize..64) {
        let g = Group { target, source, concept, vector: VectorKind::Plain };
        let owners = (0..n).filter(|&i| Shard { index: i, count: n }.owns(&g)).count();
        prop_assert_eq!(owners, 1);
    }
}
