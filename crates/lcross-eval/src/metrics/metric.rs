//! One face for every concept metric: the items a metric scores and how, so that `lcross
//! eval`, `lcross calibrate` and the reproduce runner measure through the same call
//! ([`Metric::evaluate`]) and split items the same way ([`Metric::halves`]).

use std::path::Path;

use lcross_core::dataset::AbItem;
use lcross_core::eval::{evaluate_ab_cached, evaluate_ab_conditions, Steering};
use lcross_model::Sampling;

use super::{fair, harm, judged, Setup};
use crate::error::{EvalError, Result};
use crate::judge::{Judge, JudgeFormat};
use crate::report::{EvalReport, EvalRow, ItemRecord};
use crate::rubric::{self, Rubric};

/// The metric names, as the CLI and configs spell them.
pub const METRIC_NAMES: &[&str] = &["ab", "open-ended", "harm", "emotion", "fair"];

/// A concept metric and its items.
#[derive(Debug, Clone)]
pub enum Metric {
    /// Mean probability of the behaviour-matching letter on A/B questions (no judge).
    Ab { items: Vec<AbItem> },
    /// Answers to questions, scored 0-10 for a concept by a judge.
    OpenEnded { prompts: Vec<String>, rubric: Rubric, format: JudgeFormat },
    /// HARM: the judge's harmful-answer rate (probability above `threshold`) on prompts.
    Harm { prompts: Vec<String>, threshold: f64 },
    /// The emotion of answers to scenarios, scored 0-10 by a judge.
    Emotion { prompts: Vec<String>, rubric: Rubric, format: JudgeFormat },
    /// FAIR: female words in `samples` sampled vignettes; sample `i` samples with the
    /// setup's seed + `first` + `i` (so two parts with different `first` are disjoint).
    Fair { samples: usize, first: u64 },
}

/// What [`Metric::named`] builds a metric from.
#[derive(Debug, Clone)]
pub struct MetricInputs<'a> {
    /// A/B items (`ab`: a CAA A/B file or `builtin:NAME`) or questions (`open-ended`).
    pub dataset: Option<&'a str>,
    /// Concept of the rubric (`open-ended`) or the emotion scored (`emotion`).
    pub concept: &'a str,
    /// Where `harm` and `emotion` read their held-out prompts.
    pub data_dir: &'a Path,
    /// The format of 0-10 judgements.
    pub format: JudgeFormat,
    /// The first N items (FAIR: samples; default 50).
    pub limit: Option<usize>,
}

impl Metric {
    /// The metric `name` (one of [`METRIC_NAMES`]) on its default items.
    pub fn named(name: &str, inputs: &MetricInputs<'_>) -> Result<Self> {
        let needs_dataset = |what: &str| EvalError::MissingInput { what: format!("metric `{name}`"), needs: what.into() };
        let limit = |mut v: Vec<String>| {
            if let Some(n) = inputs.limit {
                v.truncate(n);
            }
            v
        };
        Ok(match name {
            "ab" => Self::Ab {
                items: crate::pipeline::load_ab(
                    inputs.dataset.ok_or_else(|| needs_dataset("a dataset of A/B questions (a CAA test_dataset_ab.json or builtin:NAME)"))?,
                    inputs.limit,
                )?,
            },
            "open-ended" => {
                let path = inputs.dataset.ok_or_else(|| needs_dataset("a dataset of questions"))?;
                Self::OpenEnded {
                    prompts: limit(crate::inputs::read_questions(Path::new(path))?),
                    rubric: rubric::rubric_for(inputs.concept),
                    format: inputs.format,
                }
            }
            "harm" => Self::Harm { prompts: limit(harm::harm_prompts(inputs.data_dir)?), threshold: harm::HARMFUL_THRESHOLD },
            "emotion" => Self::Emotion {
                prompts: limit(judged::emotion_scenarios(inputs.data_dir)?),
                rubric: rubric::emotion_rubric(inputs.concept),
                format: inputs.format,
            },
            "fair" => Self::Fair { samples: inputs.limit.unwrap_or(fair::FAIR_SAMPLES), first: 0 },
            other => return Err(lcross_core::CoreError::BadValue { what: "metric".into(), value: other.into(), expected: METRIC_NAMES.join(", ") }.into()),
        })
    }

    /// The metric's name (one of [`METRIC_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ab { .. } => "ab",
            Self::OpenEnded { .. } => "open-ended",
            Self::Harm { .. } => "harm",
            Self::Emotion { .. } => "emotion",
            Self::Fair { .. } => "fair",
        }
    }

    /// Whether answers are scored by a judge.
    pub fn needs_judge(&self) -> bool {
        matches!(self, Self::OpenEnded { .. } | Self::Harm { .. } | Self::Emotion { .. })
    }

    /// Items (questions, prompts or samples) per condition.
    pub fn len(&self) -> usize {
        match self {
            Self::Ab { items } => items.len(),
            Self::OpenEnded { prompts, .. } | Self::Harm { prompts, .. } | Self::Emotion { prompts, .. } => prompts.len(),
            Self::Fair { samples, .. } => *samples,
        }
    }

    /// Whether there is nothing to score.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The temperature a metric samples with unless told (FAIR's; the others are greedy).
    pub fn default_temperature(&self) -> Option<f64> {
        matches!(self, Self::Fair { .. }).then_some(fair::FAIR_TEMPERATURE)
    }

    /// The first half of the items (dev) and the second (test), each with at least 2;
    /// FAIR's halves are disjoint runs of seeds.
    pub fn halves(&self) -> Result<(Self, Self)> {
        let n = self.len();
        if n < 4 {
            return Err(EvalError::TooFew { what: format!("items of metric `{}` for a dev and a test split", self.name()), needed: 4, got: n });
        }
        let mid = n / 2;
        fn split<T: Clone>(v: &[T], mid: usize) -> (Vec<T>, Vec<T>) {
            (v[..mid].to_vec(), v[mid..].to_vec())
        }
        Ok(match self {
            Self::Ab { items } => {
                let (a, b) = split(items, mid);
                (Self::Ab { items: a }, Self::Ab { items: b })
            }
            Self::OpenEnded { prompts, rubric, format } => {
                let (a, b) = split(prompts, mid);
                (
                    Self::OpenEnded { prompts: a, rubric: rubric.clone(), format: *format },
                    Self::OpenEnded { prompts: b, rubric: rubric.clone(), format: *format },
                )
            }
            Self::Harm { prompts, threshold } => {
                let (a, b) = split(prompts, mid);
                (Self::Harm { prompts: a, threshold: *threshold }, Self::Harm { prompts: b, threshold: *threshold })
            }
            Self::Emotion { prompts, rubric, format } => {
                let (a, b) = split(prompts, mid);
                (Self::Emotion { prompts: a, rubric: rubric.clone(), format: *format }, Self::Emotion { prompts: b, rubric: rubric.clone(), format: *format })
            }
            Self::Fair { samples, first } => {
                (Self::Fair { samples: mid, first: *first }, Self::Fair { samples: samples - mid, first: first.wrapping_add(mid as u64) })
            }
        })
    }

    /// Score every condition of `setup` (one row each, side effects added where the setup
    /// asks for them) and every item; `judge` must be given when [`Self::needs_judge`].
    pub fn evaluate(&self, setup: &mut Setup<'_>, judge: Option<&dyn Judge>) -> Result<(EvalReport, Vec<ItemRecord>)> {
        let judge = || judge.ok_or_else(|| EvalError::NoJudge { metric: self.name().into() });
        match self {
            Self::Ab { items } => {
                let steer: Vec<Option<Steering<'_>>> = setup.conditions.iter().map(|c| c.vector.as_ref().map(|v| c.steering(v))).collect();
                let results = match setup.store.as_mut() {
                    Some(store) => evaluate_ab_cached(setup.model, items, &steer, store)?,
                    None => evaluate_ab_conditions(setup.model, items, &steer)?,
                };
                let rows = setup.conditions.iter().zip(&results).map(|(c, r)| EvalRow::of(c, &r.per_item)).collect();
                Ok((EvalReport { metric: "ab_prob_matching".into(), rows, about: Default::default() }, Vec::new()))
            }
            Self::OpenEnded { prompts, rubric, format } => judged::open_ended(setup, judge()?, *format, prompts, rubric),
            Self::Harm { prompts, threshold } => harm::harm(setup, judge()?, prompts, *threshold),
            Self::Emotion { prompts, rubric, format } => judged::emotion(setup, judge()?, *format, prompts, rubric),
            Self::Fair { samples, first } => {
                let given = setup.settings.sampling;
                let Sampling::Sample { temperature, top_p, seed } = given else { return fair::fair(setup, *samples) };
                setup.settings.sampling = Sampling::Sample { temperature, top_p, seed: seed.wrapping_add(*first) };
                let out = fair::fair(setup, *samples);
                setup.settings.sampling = given;
                out
            }
        }
    }

    /// The rows of [`Self::evaluate`] alone.
    pub fn rows(&self, setup: &mut Setup<'_>, judge: Option<&dyn Judge>) -> Result<Vec<EvalRow>> {
        Ok(self.evaluate(setup, judge)?.0.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_are_disjoint_and_cover_the_items() {
        let prompts: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        let m = Metric::Harm { prompts: prompts.clone(), threshold: 0.5 };
        let (Metric::Harm { prompts: dev, .. }, Metric::Harm { prompts: test, .. }) = m.halves().unwrap() else { panic!("halves change the metric") };
        assert_eq!([dev, test].concat(), prompts);
        let (Metric::Fair { samples: a, first: fa }, Metric::Fair { samples: b, first: fb }) = (Metric::Fair { samples: 9, first: 3 }).halves().unwrap() else {
            panic!("halves change the metric")
        };
        assert_eq!((a, fa, b, fb), (4, 3, 5, 7), "FAIR's test seeds start where dev's end");
        let err = (Metric::Fair { samples: 3, first: 0 }).halves().unwrap_err();
        assert!(matches!(err, EvalError::TooFew { needed: 4, got: 3, .. }), "{err}");
    }

    #[test]
    fn unknown_names_and_missing_inputs_are_typed() {
        let dir = Path::new("/nonexistent");
        let inputs = MetricInputs { dataset: None, data_dir: dir, concept: "refusal", format: JudgeFormat::Auto, limit: None };
        assert!(matches!(Metric::named("bleu", &inputs), Err(EvalError::Core(lcross_core::CoreError::BadValue { .. }))));
        assert!(matches!(Metric::named("ab", &inputs), Err(EvalError::MissingInput { .. })));
        assert!(matches!(Metric::named("harm", &inputs), Err(EvalError::Core(lcross_core::CoreError::MissingData { .. }))));
        assert_eq!(Metric::named("fair", &MetricInputs { limit: Some(10), ..inputs }).unwrap().len(), 10);
    }
}
