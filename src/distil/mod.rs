//! From trajectories to a training set: which episodes to keep (`filter`), and how each becomes a chat row with
//! the rollout's exact token ids and an assistant-only loss mask (`rows`). The mask audit lives with the row type
//! in `data::dataset`. `chat` turns plain chat rows from elsewhere into the same rows with the model's chat template.
pub mod chat;
pub mod filter;
pub mod rl;
pub mod rows;
pub mod write;

pub use filter::{select, DropReason, FilterParams, FilterReport, Selection};
pub use rows::{build_row, strip_hint, teacher_view, BuiltRow, ChatEncoder, RowError};
pub use write::{filter_to_dir, FilterOutput, AUDIT_FILE, DATASET_FILE, REPORT_FILE};
