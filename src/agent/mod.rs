//! Tasks, suites, sandboxes, tool calls and episodes.
