"""Who is asking: the session cookie, the CSRF check, roles, and the login pages.

Cookies are HttpOnly, SameSite=Strict, Path=/ and Secure (unless `[web] secure_cookies =
false`, for plain HTTP on loopback in tests). Every POST carries the session's CSRF token in
a hidden field; the login form, before there is a session, uses a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mxflow.web.accounts import Accounts, Session

COOKIE = "mxflow_session"
LOGIN_COOKIE = "mxflow_login"


class Denied(Exception):
    """The request may not go on: the response says why (login page, 403, 400...)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _state(request: Request) -> Any:
    return request.app.state


def accounts(request: Request) -> Accounts:
    found: Accounts = _state(request).accounts
    return found


def set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=bool(_state(request).config.web.secure_cookies),
    )


def session(request: Request) -> Session | None:
    return accounts(request).session(request.cookies.get(COOKIE, ""))


def require(request: Request, *, admin: bool = False) -> Session:
    """The request's live session, or Denied: the login page, or 403 for a non-admin."""
    found = session(request)
    if found is None:
        target = request.url.path
        raise Denied(RedirectResponse(f"/login?next={target}", status_code=303))
    if admin and not found.user.is_admin:
        from mxflow.web.render import error_page

        raise Denied(error_page(request, found, 403, "Only an administrator may see this page."))
    return found


async def require_post(request: Request, *, admin: bool = False) -> tuple[Session, Any]:
    """`require`, then the form, whose `csrf` field must be the session's token."""
    found = require(request, admin=admin)
    form = await request.form()
    token = str(form.get("csrf", ""))
    if not hmac.compare_digest(token.encode(), found.csrf.encode()):
        from mxflow.web.render import error_page

        raise Denied(
            error_page(request, found, 400, "The form was stale or forged (bad CSRF token).")
        )
    return found, form


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
