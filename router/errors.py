"""Typed errors of the request path. Only the ingress turns them into gRPC status codes."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """Base: an error that reaches the client with a status code and a message."""

    grpc_code = grpc.StatusCode.INTERNAL


class InvalidRequest(RequestError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(RequestError):
    """Admission refused the request (a limit or quota); retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RequestError):
    """No healthy replica could serve the request, or an engine failed it; safe to retry."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RequestError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
