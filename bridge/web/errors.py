"""Matrix-style JSON errors for every HTTP answer that is not a success.

Thread: request threads (the Flask error handlers).
"""

from __future__ import annotations

from flask import Response, jsonify


def matrix_error(status: int, errcode: str, error: str) -> Response:
    response = jsonify({"errcode": errcode, "error": error})
    response.status_code = status
    return response
