"""A minimal MCP server over stdio for scripts/dev/bench-tools.sh: one tool, `calculator`, that evaluates an
arithmetic expression exactly as the built-in calculator's tasks need and sleeps DELAY_MS milliseconds first.
Written against the protocol directly (no SDK), so that starting it costs little; the measured server from PyPI
is mcp-server-calculator."""
import ast
import json
import operator
import sys
import time
from fractions import Fraction

delay = int(sys.argv[1]) / 1000
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def value(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        return OPS[type(node.op)](value(node.left), value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -value(node.operand)
    raise ValueError("unsupported expression")


def show(x):
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


TOOL = {"name": "calculator", "description": "Evaluate an arithmetic expression with + - * / and parentheses.",
        "inputSchema": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    if m["method"] == "initialize":
        r = {"protocolVersion": m["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "bench", "version": "0"}}
    elif m["method"] == "tools/list":
        r = {"tools": [TOOL]}
    else:
        time.sleep(delay)
        try:
            r = {"content": [{"type": "text", "text": show(value(ast.parse(m["params"]["arguments"]["expression"], mode="eval").body))}]}
        except Exception as e:
            r = {"content": [{"type": "text", "text": f"error: {e}"}], "isError": True}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}) + "\n")
    sys.stdout.flush()
