//! One filter stage, shared by `autodidact filter` and the loop: select episodes, build rows, audit the masks,
//! then write dataset.jsonl, filter_report.json and mask_audit.json (each atomically; the report last, so its
//! presence marks a finished stage).
use std::path::Path;

use anyhow::{bail, Context};

use super::{build_row, select, ChatEncoder, FilterParams, FilterReport};
use crate::data::dataset::{DatasetRow, MaskAudit};
use crate::data::jsonl::{write_json_atomic, write_jsonl_atomic};
use crate::data::Trajectory;

pub const DATASET_FILE: &str = "dataset.jsonl";
pub const REPORT_FILE: &str = "filter_report.json";
pub const AUDIT_FILE: &str = "mask_audit.json";

pub struct FilterOutput {
    pub report: FilterReport,
    pub rows: Vec<DatasetRow>,
    pub audit: MaskAudit,
}

impl FilterOutput {
    pub fn trained_tokens(&self) -> usize {
        self.rows.iter().map(DatasetRow::trained_tokens).sum()
    }
}

/// `encoder` re-renders the context without few-shot examples (context distillation); `stop_ids` lets the
/// audit check that every turn's end-of-turn token is trained. A failed audit writes the audit only.
pub fn filter_to_dir(
    trajs: &[Trajectory],
    params: &FilterParams,
    encoder: Option<&dyn ChatEncoder>,
    stop_ids: Option<&[u32]>,
    out: &Path,
) -> anyhow::Result<FilterOutput> {
    let sel = select(trajs, params);
    let mut rows = Vec::new();
    let mut audit = MaskAudit::default();
    for i in sel.kept() {
        let built = build_row(&trajs[i], encoder)?;
        audit.add(&built.provenance(), stop_ids);
        rows.push(built.row);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_json_atomic(&out.join(AUDIT_FILE), &audit)?;
    crate::fault::point("filter:audit");
    if !audit.ok() {
        let first: Vec<String> = audit.problems.iter().take(3).map(|p| format!("  {}: {}", p.row, p.message)).collect();
        bail!("the mask audit failed ({} problems, see {}); no dataset written:\n{}", audit.problems.len(), out.join(AUDIT_FILE).display(), first.join("\n"));
    }
    write_jsonl_atomic(&out.join(DATASET_FILE), &rows)?;
    crate::fault::point("filter:dataset");
    write_json_atomic(&out.join(REPORT_FILE), &sel.report)?;
    Ok(FilterOutput { report: sel.report, rows, audit })
}
