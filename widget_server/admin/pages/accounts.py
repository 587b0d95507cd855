"""Who may use the admin (accounts, owners only) and what they changed (the audit log)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..accounts import ROLES, AccountError, Role
from ..guard import Admin, Guard
from ..web import redirect


def routes(guard: Guard) -> list[BaseRoute]:
    return [
        Route("/audit", guard(audit_log)),
        Route("/accounts", guard(accounts, "owner"), methods=["GET", "POST"]),
        Route("/accounts/role", guard(change_role, "owner"), methods=["POST"]),
        Route("/accounts/remove", guard(remove_account, "owner"), methods=["POST"]),
    ]


async def audit_log(admin: Admin) -> Response:
    raw = admin.request.query_params.get("page", "1")
    number = int(raw) if raw.isdigit() and 0 < int(raw) < 10_000 else 1
    entries, more = await admin.audit.page(number)
    return admin.page("audit.html", entries=entries, number=number, more=more)


async def accounts(admin: Admin, error: str = "", status: int = 200) -> Response:
    values = {"email": "", "role": "editor"}
    if admin.request.method == "POST" and not error:
        values = {"email": admin.form.get("email").strip(), "role": admin.form.get("role")}
        try:
            user = await admin.accounts.create(
                values["email"], admin.form.get("password"), _role(values["role"])
            )
        except AccountError as exc:
            error, status = _sentence(str(exc)), 422
        else:
            await admin.record(
                "account.create", user.email, after={"email": user.email, "role": user.role}
            )
            return redirect("/accounts", "created")
    return admin.page(
        "accounts.html",
        status=status,
        users=await admin.accounts.list(),
        roles=ROLES,
        values=values,
        error=error,
    )


async def change_role(admin: Admin) -> Response:
    email = admin.form.get("email")
    try:
        before, after = await admin.accounts.set_role(email, _role(admin.form.get("role")))
    except AccountError as exc:
        return await accounts(admin, _sentence(str(exc)), 422)
    await admin.record(
        "account.role", after.email, before={"role": before.role}, after={"role": after.role}
    )
    return redirect("/accounts", "saved")


async def remove_account(admin: Admin) -> Response:
    email = admin.form.get("email")
    try:
        removed = await admin.accounts.remove(email)
    except AccountError as exc:
        return await accounts(admin, _sentence(str(exc)), 422)
    await admin.record(
        "account.remove", removed.email, before={"email": removed.email, "role": removed.role}
    )
    return redirect("/accounts", "removed")


def _role(value: str) -> Role:
    if value not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    return value


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
