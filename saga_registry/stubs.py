"""What counts as an unwritten reaction: one definition for codegen (which reads a
project's modules as text) and the runtime (which refuses to run them)."""

from __future__ import annotations

import ast


def is_stub(node: ast.stmt) -> bool:
    """Whether `node` is a function whose whole body, after an optional docstring, is
    `raise NotImplementedError` (with or without a message): the body codegen writes
    into a new owned module."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise):
        return False
    raised = body[0].exc
    if isinstance(raised, ast.Call):
        raised = raised.func
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
