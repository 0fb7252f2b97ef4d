"""Writes the Parquet chat-dataset fixtures of tests/it/distil_parquet.rs with the writers Hugging Face datasets use,
and the JSONL file they must read the same as.

The Parquet files have to come from those writers, not from the Rust crate that reads them, or the test would only
check the reader against itself. Pinned (the versions the checked-in files were written with):

    bash scripts/pinned-venv.sh .cache/parquet-fixture-venv datasets==5.2.0 pyarrow==26.0.1
    .cache/parquet-fixture-venv/bin/python scripts/dev/make_parquet_fixture.py

- chat.jsonl: the rows as JSONL (tools as lists, call arguments as JSON strings, OpenAI's form);
- chat.parquet: the same rows through `datasets.Dataset.from_list(...).to_parquet(...)` (its default codec,
  Snappy): `tools` a list of structs, as `datasets` infers it;
- chat_tools_json.parquet: pyarrow's `write_table` with gzip, `tools` a JSON string column and call arguments
  structs, plus a binary column that is not text (never read);
- chat_bad.parquet: two rows, the second with a user message right after tool results;
- prompt_completion.parquet: a dataset of another form (`prompt` and `completion`, no `messages`);
- chat_zstd.parquet: one row compressed with Zstandard (polars' default), which is refused.
"""

import copy
import json
import pathlib

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluates an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks up the capital of a country.",
        "parameters": {
            "type": "object",
            "properties": {"country": {"type": "string", "description": "the country's English name"}},
            "required": ["country"],
        },
    },
}


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


ROWS = [
    {
        # Both writers take the columns from the first row's keys.
        "id": None,
        "source": "handwritten",
        "score": 0.5,
        "tools": [CALCULATOR],
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": "What is 17 * 23?"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "calculator", {"expression": "17 * 23"})]},
            {"role": "tool", "tool_call_id": "c1", "content": "391"},
            {"role": "assistant", "content": "17 * 23 = 391."},
            {"role": "user", "content": "And half of it?"},
            {"role": "assistant", "content": "Half of 391 is 195.5.", "weight": 0},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."},
        ],
    },
    {
        "id": "capitals-1",
        "source": "handwritten",
        "score": 1.0,
        "tools": [LOOKUP, CALCULATOR],
        "messages": [
            {"role": "user", "content": "What is the capital of France, and what is 2**10?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("a", "lookup", {"country": "France"}), call("b", "calculator", {"expression": "2**10"})],
            },
            {"role": "tool", "tool_call_id": "a", "name": "lookup", "content": "Paris"},
            {"role": "tool", "tool_call_id": "b", "name": "calculator", "content": "1024"},
            {"role": "assistant", "content": "The capital of France is Paris, and 2**10 = 1024."},
        ],
    },
    {
        "id": None,
        "source": "handwritten",
        "score": 0.25,
        "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
    },
]


def tools_as_json_string(row):
    """The other common form: `tools` a JSON string, call arguments objects, and a column that is not text."""
    row = copy.deepcopy(row)
    row.pop("score")
    row["image"] = b"\x89PNG\r\n\x1a\n\xff\xfe"
    if "tools" in row:
        row["tools"] = json.dumps(row["tools"])
    for m in row["messages"]:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return row


def main():
    with open(OUT / "chat.jsonl", "w") as f:
        for r in ROWS:
            f.write(json.dumps(r) + "\n")
    datasets.Dataset.from_list(ROWS).to_parquet(str(OUT / "chat.parquet"))
    pq.write_table(pa.Table.from_pylist([tools_as_json_string(r) for r in ROWS]), OUT / "chat_tools_json.parquet", compression="gzip")
    bad = copy.deepcopy(ROWS[0])
    bad["messages"][4]["role"] = "user"
    pq.write_table(pa.Table.from_pylist([ROWS[0], bad]), OUT / "chat_bad.parquet", compression="snappy")
    pq.write_table(pa.Table.from_pylist([{"prompt": "What is 2+2?", "completion": "4"}]), OUT / "prompt_completion.parquet")
    pq.write_table(pa.Table.from_pylist([{"messages": ROWS[2]["messages"]}]), OUT / "chat_zstd.parquet", compression="zstd")
    for name in ["chat.parquet", "chat_tools_json.parquet", "chat_bad.parquet", "prompt_completion.parquet", "chat_zstd.parquet"]:
        meta = pq.ParquetFile(OUT / name).metadata
        codecs = {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups) for c in range(meta.num_columns)}
        print(name, meta.num_rows, "rows", sorted(codecs), meta.created_by)
        print(pq.read_schema(OUT / name).to_string(show_schema_metadata=False))


if __name__ == "__main__":
    main()
