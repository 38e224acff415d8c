//! Evaluations scored 0-10 by a judge with a rubric: open-ended answers to a concept's
//! questions, and the emotion of answers to scenarios.

use crate::error::Result;
use crate::judge::{Judge, JudgeFormat, JudgeRequest};
use crate::report::{EvalReport, EvalRow, ItemRecord};
use crate::rubric::Rubric;

use super::{judge_cached, judged_items, scored, Setup};

/// Answer each user message under every condition and score the answers with `rubric`
/// (the judge sees `questions[i]`, which may differ from the prompt the model got).
pub fn judged_metric(
    setup: &mut Setup<'_>,
    judge: &dyn Judge,
    format: JudgeFormat,
    metric: &str,
    prompts: &[String],
    questions: &[String],
    rubric: &Rubric,
) -> Result<(EvalReport, Vec<ItemRecord>)> {
    let answers = setup.answers(prompts, metric)?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (cond, ans) in setup.conditions.iter().zip(&answers) {
        let requests: Vec<JudgeRequest> = questions.iter().zip(ans).map(|(q, a)| JudgeRequest::score(rubric, q, &a.text, format)).collect();
        let js = judge_cached(judge, &requests, setup.store.as_mut(), &format!("{metric} {} beta {}", cond.label, cond.beta))?;
        let (scores, failed) = scored(&js);
        rows.push(EvalRow::of(cond, &scores).with("judge_failures", failed));
        items.extend(judged_items(cond, prompts, ans, &js));
    }
    setup.add_side_effects(&mut rows, prompts, &answers)?;
    let mut report = EvalReport { metric: metric.into(), rows, about: Default::default() };
    report.about.insert("judge".into(), judge.id().into());
    report.about.insert("concept".into(), rubric.concept.clone().into());
    report.about.insert("judge_format".into(), serde_json::json!(format.resolve(rubric)));
    Ok((report, items))
}

/// Open-ended answers to `questions`, scored 0-10 for the concept of `rubric`.
pub fn open_ended(
    setup: &mut Setup<'_>,
    judge: &dyn Judge,
    format: JudgeFormat,
    questions: &[String],
    rubric: &Rubric,
) -> Result<(EvalReport, Vec<ItemRecord>)> {
    judged_metric(setup, judge, format, "open-ended", questions, questions, rubric)
}

/// The user message for an emotion scenario.
pub fn scenario_prompt(scenario: &str) -> String {
    format!("{}\n\nHow does this make you feel? Answer in two or three sentences.", scenario.trim())
}

/// The held-out emotion scenarios: the last 25 of each of the happiness and fear files
/// (never used for extraction), interleaved, as user prompts ([`scenario_prompt`]).
pub fn emotion_scenarios(data_dir: &std::path::Path) -> Result<Vec<String>> {
    use lcross_core::dataset::{repe_emotion, Split, REPE_EVAL_COUNT};
    let (_, happy) = repe_emotion(data_dir, "happiness", "fear", Split::Eval)?;
    let (_, fear) = repe_emotion(data_dir, "fear", "happiness", Split::Eval)?;
    let half = REPE_EVAL_COUNT / 2;
    let mut out = Vec::new();
    for (h, f) in happy[happy.len() - half..].iter().zip(&fear[fear.len() - half..]) {
        out.push(scenario_prompt(h));
        out.push(scenario_prompt(f));
    }
    Ok(out)
}

/// The emotion of answers scored 0-10 (`rubric` from [`crate::rubric::emotion_rubric`]).
/// `prompts` are the user messages (scenarios through [`scenario_prompt`], or given).
pub fn emotion(setup: &mut Setup<'_>, judge: &dyn Judge, format: JudgeFormat, prompts: &[String], rubric: &Rubric) -> Result<(EvalReport, Vec<ItemRecord>)> {
    judged_metric(setup, judge, format, "emotion", prompts, prompts, rubric)
}
