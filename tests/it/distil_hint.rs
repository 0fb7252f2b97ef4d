//! Privileged context: a hinted episode, stripped of its hint, is token for token the episode the model would
//! have produced without it; the teacher's view of an unhinted episode is token for token the hinted one.
use super::common;

use autodidact::agent::hint::{privileged, HintPlacement, HintSource, HintSpec};
use autodidact::data::{Split, Task, Trajectory};
use autodidact::distil::rl::{rl_rows, Rewards, Teacher};
use autodidact::distil::{build_row, strip_hint, teacher_view};
use autodidact::model::LoadedModel;
use autodidact::tasks::suites::{self, generate_many};
use common::tiny;

/// The scripted rollouts in task order.
fn rollouts(model: &LoadedModel, tasks: &[Task], fewshot: bool, hint: Option<HintSpec>) -> Vec<Trajectory> {
    let mut out = common::template_policy::rollouts(model, tasks, fewshot, hint);
    out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    out
}

#[test]
fn hints_splice_out_for_training_and_in_for_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 1);
    let model = LoadedModel::load(dir.path().to_str().unwrap()).unwrap();
    let mut tasks = generate_many(suites::get("tables").unwrap(), 3, Split::Train, 2, 2).unwrap();
    tasks.extend(generate_many(suites::get("grid").unwrap(), 3, Split::Train, 1, 1).unwrap());
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let cases = [
        (true, HintSource::Plan, HintPlacement::System),
        (false, HintSource::Skill, HintPlacement::System),
        (true, HintSource::Plan, HintPlacement::User),
        (false, HintSource::Plan, HintPlacement::User),
    ];
    for (fewshot, source, placement) in cases {
        let plain = rollouts(&model, &tasks, fewshot, None);
        let hinted = rollouts(&model, &tasks, fewshot, Some(HintSpec { source, placement }));
        for ((p, h), task) in plain.iter().zip(&hinted).zip(&tasks) {
            let hint = privileged(task, source).unwrap();
            assert_eq!(h.privileged.as_deref(), Some(hint.as_str()));
            let at = placement.index(h.fewshot_messages);
            assert!(h.messages[at].content.ends_with(&hint), "{placement:?}");
            assert!(
                h.messages.iter().chain(&p.messages).filter(|m| m.content.contains("Hint:")).count() == 1,
                "the hint is in one message of the hinted episode only"
            );
            assert!(h.token_ids.len() > p.token_ids.len() + 10);
            // Out: the hinted episode without its hint is the plain one.
            let s = strip_hint(h, &model).unwrap();
            assert_eq!((&s.token_ids, &s.produced_mask, &s.messages), (&p.token_ids, &p.produced_mask, &p.messages), "{}", task.id);
            assert_eq!(s.logprobs.len(), s.token_ids.len());
            assert!(s.privileged.is_none());
            build_row(&s, None).unwrap();
            let e = build_row(h, None).err().unwrap().to_string();
            assert!(e.contains("hint"), "{e}");
            // In: the teacher's view of the plain episode is the hinted one, every later token shifted alike.
            let (ids, shift) = teacher_view(p, &hint, placement, &model).unwrap();
            assert_eq!(ids, h.token_ids);
            assert_eq!(shift, h.token_ids.len() as isize - p.token_ids.len() as isize);
        }
        let hint_of = |t: &Trajectory| privileged(tasks.iter().find(|k| k.id == t.task_id).unwrap(), source);
        let (rows, without) = rl_rows(&plain, &Rewards::default(), Some(&Teacher { hint_of: &hint_of, placement, encoder: &model })).unwrap();
        assert_eq!(without, 0);
        assert!(rows.iter().all(|r| r.reward == 10.0 && r.teacher.as_ref().unwrap().shift > 0));
        assert!(rl_rows(&hinted, &Rewards::default(), None).is_err(), "RL never trains on hinted samples");
    }
}
