//! Trajectory, dataset and report records; JSONL io.
