"""Trading accounts: list, add, edit, delete (with confirmation), primary, (de)activate, test connection,
and resume new entries on an account whose entries reconciliation halted (with confirmation).

The API key is write-only from the browser's point of view: it is encrypted on save, never put into a
page (the form's key field is always rendered empty) and never logged. The stored key is only ever sent
to the saved host: moving an account to another host, or testing one, needs the key typed again.

Host URLs are parsed and rebuilt by the form (:func:`~algomirror.broker.hosts.normalize_host_url`) and
checked against the administrator's allow-list (:mod:`algomirror.host_settings`) when an account is
saved and before every connection test.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError
from wtforms.fields.choices import SelectChoice

from algomirror.broker.facade import ConnectionTest
from algomirror.broker.hosts import normalize_host_url
from algomirror.db.models import TradingAccount
from algomirror.db.retirement import Retired, StillTradingError
from algomirror.domain.brokers import BROKERS
from algomirror.domain.money import format_inr
from algomirror.domain.timeutil import to_ist
from algomirror.engine.alerts import open_alerts
from algomirror.engine.halts import resume_account_entries
from algomirror.host_settings import load_host_policy
from algomirror.security import last4
from algomirror.web.accounts import repo
from algomirror.web.context import db, log_activity, market_now, me, now, redirect_to, release_db, state
from algomirror.web.dashboard import POLL_SECONDS, require_sign_in
from algomirror.web.forms import AccountForm, ConfirmForm, require_confirmation

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


require_sign_in(bp)


def _own(account_id: int) -> TradingAccount:
    account = repo.get_account(db(), me().id, account_id)
    if account is None:
        abort(404)
    return account


def _run_test(host_url: str, api_key: str, *, account_id: int | None) -> ConnectionTest:
    release_db()
    result = state().connection_tester(host_url, api_key)
    outcome = "ok" if result.ok else result.status
    log_activity(
        db(),
        "connection_tested",
        user_id=me().id,
        account_id=account_id,
        details=f"{host_url[:200]}: {outcome}: {result.message[:300]}",
    )
    return result


HOST_NOT_ALLOWED = "This host is not on the administrator's list of allowed account hosts."
KEY_FOR_NEW_HOST = (
    "Enter the API key again to use another host: the stored key is only sent to the saved host."
)

UNREADABLE_KEY = (
    "The stored API key cannot be decrypted (was the encryption key in instance/fernet.key replaced?). "
    "Enter the API key again."
)


def _stored_key(account: TradingAccount) -> str | None:
    """The account's decrypted API key; None when there is none or it cannot be decrypted."""
    if not account.api_key_encrypted:
        return None
    try:
        return state().box.decrypt(account.api_key_encrypted)
    except ValueError:
        return None


def _result_text(result: ConnectionTest) -> str:
    if result.ok:
        cash = (
            f", available cash {format_inr(result.available_cash)}"
            if result.available_cash is not None
            else ""
        )
        return f"Connected{f' to {result.broker}' if result.broker else ''}{cash}."
    message = result.message.rstrip(".")
    return f"Connection failed: {message}."


def _list_context() -> dict[str, object]:
    at = market_now()
    return {
        "accounts": repo.list_accounts(db(), me().id),
        "form": ConfirmForm(),
        "generated_at": at,
        "today": to_ist(at).date(),
        "poll_seconds": POLL_SECONDS,
    }


@bp.route("/")
def index() -> ResponseReturnValue:
    """The signed-in user's accounts (the list refreshes itself: see :func:`live`)."""
    return render_template("accounts/index.html", **_list_context())


@bp.route("/live")
def live() -> ResponseReturnValue:
    """The accounts table alone, for the page's htmx poll (status and errors change without a reload)."""
    return render_template("accounts/_list.html", **_list_context())


@bp.route("/<id:account_id>")
def detail(account_id: int) -> ResponseReturnValue:
    """One of the user's accounts (404 if it is not theirs)."""
    return render_template("accounts/detail.html", account=_own(account_id), form=ConfirmForm())


def _same_host(account: TradingAccount, host_url: str) -> bool:
    """Whether ``host_url`` (already rebuilt by the form) is the account's saved host."""
    try:
        saved = normalize_host_url(account.host_url)
    except ValueError:
        return False  # a stored URL the rules now refuse is no host to send the stored key to
    return host_url == saved


def _host_allowed(form: AccountForm) -> bool:
    """False, with the message beside the field, when the allow-list refuses the form's (valid) host."""
    if form.host_url.errors:
        return False
    if load_host_policy(db()).allows(form.host_url.data or ""):
        return True
    form.host_url.errors = [*form.host_url.errors, HOST_NOT_ALLOWED]
    return False


def _valid(form: AccountForm, *, exclude_id: int | None = None) -> bool:
    """The form was submitted and passes every check: fields, a free name, an allowed host."""
    if not form.validate_on_submit():
        return False
    name_ok = _name_ok(form, exclude_id=exclude_id)
    return _host_allowed(form) and name_ok


def _name_ok(form: AccountForm, *, exclude_id: int | None = None) -> bool:
    if repo.name_taken(db(), me().id, form.account_name.data or "", exclude_id=exclude_id):
        form.account_name.errors = [*form.account_name.errors, "You already have an account with this name."]
        return False
    return True


@bp.route("/new", methods=["GET", "POST"])
def create() -> ResponseReturnValue:
    """Add an account: on a valid form its connection is tested; a failed test saves it (as disconnected)
    only with "save anyway" ticked, else the form comes back asking; an invalid form or a taken name
    re-renders with 400."""
    form = AccountForm(key_required=True)
    if not _valid(form):
        status = 400 if form.is_submitted() else 200
        return render_template("accounts/form.html", form=form, account=None, result=None), status
    user_id = me().id
    session_db = db()
    key = (form.api_key.data or "").strip()
    release_db()
    result = state().connection_tester(form.host_url.data or "", key)
    if not result.ok and not form.save_anyway.data:
        return _confirm_save(form, None, result, user_id)
    try:
        account = repo.create_account(
            session_db,
            user_id,
            account_name=form.account_name.data or "",
            broker=form.broker.data or "",
            host_url=form.host_url.data or "",
            websocket_url=form.websocket_url.data or "",
            api_key_encrypted=state().box.encrypt(key),
            api_key_last4=last4(key),
        )
        repo.record_connection_test(account, result, market_now())
        log_activity(
            session_db,
            "account_created",
            user_id=user_id,
            account_id=account.id,
            details=f"{account.account_name} ({account.broker})",
        )
        log_activity(
            session_db,
            "connection_tested",
            user_id=user_id,
            account_id=account.id,
            details=f"{account.host_url}: {'ok' if result.ok else result.status}: {result.message[:300]}",
        )
        if account.is_primary:
            log_activity(
                session_db,
                "account_primary_changed",
                user_id=user_id,
                account_id=account.id,
                details="first account becomes the primary",
            )
        session_db.commit()
    except IntegrityError:
        session_db.rollback()
        form.account_name.errors = [*form.account_name.errors, "You already have an account with this name."]
        return render_template("accounts/form.html", form=form, account=None, result=None), 400
    if result.ok:
        return redirect_to(
            "accounts.index", f"Account “{account.account_name}” saved. {_result_text(result)}"
        )
    return redirect_to(
        "accounts.index",
        f"Account “{account.account_name}” saved as disconnected. {_result_text(result)}",
        "warning",
    )


@bp.route("/new/test", methods=["POST"])
def test_new() -> ResponseReturnValue:
    """Test the connection of the add-account form's URL and key without saving (400 if invalid)."""
    form = AccountForm(key_required=True)
    result = None
    if form.validate_on_submit() and _host_allowed(form):
        result = _run_test(form.host_url.data or "", (form.api_key.data or "").strip(), account_id=None)
        db().commit()
    status = 200 if result is not None else 400
    return render_template(
        "accounts/form.html", form=form, account=None, result=result, result_text=_text_or_none(result)
    ), status


def _confirm_save(
    form: AccountForm, account: TradingAccount | None, result: ConnectionTest, user_id: int | None
) -> ResponseReturnValue:
    """The form again, unsaved, with the failed test and a "save anyway" choice (200: a question, not an
    error). With ``user_id`` the test is logged here (the create path tests before any row exists)."""
    if user_id is not None:
        log_activity(
            db(),
            "connection_tested",
            user_id=user_id,
            account_id=None,
            details=f"{(form.host_url.data or '')[:200]}: {result.status}: {result.message[:300]}",
        )
        db().commit()
    return render_template(
        "accounts/form.html",
        form=form,
        account=account,
        result=result,
        result_text=_result_text(result) + " Nothing was saved: check the details, or save anyway.",
        confirm_save=True,
    )


def _text_or_none(result: ConnectionTest | None) -> str | None:
    return _result_text(result) if result is not None else None


def _edit_form(account: TradingAccount) -> AccountForm:
    form = AccountForm(key_required=False, obj=account)
    if account.broker and account.broker not in BROKERS:
        # Keep a broker id reported by the server even if it is not in our list.
        form.broker.choices = [*(form.broker.choices or []), SelectChoice(account.broker)]
    return form


@bp.route("/<id:account_id>/edit", methods=["GET", "POST"])
def edit(account_id: int) -> ResponseReturnValue:
    """Edit an account; a new key is tested right away, and a failed test saves only with "save anyway"
    ticked (else nothing is saved and the form asks). An empty key field keeps the stored key, except
    with a new host or WebSocket URL: that needs the key typed again (the stored key never goes to
    another host)."""
    account = _own(account_id)
    form = _edit_form(account)
    valid = _valid(form, exclude_id=account.id)
    new_key = (form.api_key.data or "").strip()
    # The market-data socket authenticates with the same key, so a new WebSocket URL is a move too.
    moved = not _same_host(account, form.host_url.data or "") or (
        (form.websocket_url.data or account.websocket_url).strip() != account.websocket_url
    )
    if valid and moved and not new_key and account.api_key_encrypted:
        form.api_key.errors = [*form.api_key.errors, KEY_FOR_NEW_HOST]
        valid = False
    if not valid:
        status = 400 if form.is_submitted() else 200
        return render_template("accounts/form.html", form=form, account=account, result=None), status
    session_db = db()
    user_id = me().id
    result: ConnectionTest | None = None
    if new_key:
        # A key change clears an auth_failed stop: the new key gets its own test right away, before any
        # change is written (the test commits what the request wrote so far).
        result = _run_test(form.host_url.data or account.host_url, new_key, account_id=account.id)
        if not result.ok and not form.save_anyway.data:
            session_db.commit()  # the test is recorded; nothing of the form is saved
            return _confirm_save(form, _own(account_id), result, None)
    changes = [
        name
        for name in ("account_name", "broker", "host_url", "websocket_url")
        if getattr(form, name).data != getattr(account, name)
    ]
    account.account_name = form.account_name.data or account.account_name
    account.broker = form.broker.data or account.broker
    account.host_url = form.host_url.data or account.host_url
    account.websocket_url = form.websocket_url.data or account.websocket_url
    if new_key:
        changes.append("api_key")
        account.api_key_encrypted = state().box.encrypt(new_key)
        account.api_key_last4 = last4(new_key)
    if result is not None:
        repo.record_connection_test(account, result, market_now())
    log_activity(
        session_db,
        "account_updated",
        user_id=user_id,
        account_id=account.id,
        details="changed: " + (", ".join(changes) or "nothing"),
    )
    try:
        session_db.commit()
    except IntegrityError:
        session_db.rollback()
        form.account_name.errors = [*form.account_name.errors, "You already have an account with this name."]
        return render_template("accounts/form.html", form=form, account=_own(account_id), result=None), 400
    message = f"Account “{account.account_name}” updated."
    if result is not None:
        message += " " + _result_text(result)
    return redirect_to("accounts.index", message, "success" if result is None or result.ok else "warning")


@bp.route("/<id:account_id>/edit/test", methods=["POST"])
def test_edit(account_id: int) -> ResponseReturnValue:
    """Test the edit form's URL with its key, without saving. With the key field empty the stored key is
    used, but only against the saved host: another host needs the key typed again."""
    account = _own(account_id)
    form = _edit_form(account)
    result = None
    if form.validate_on_submit() and _host_allowed(form):
        key = (form.api_key.data or "").strip() or None
        problem = KEY_FOR_NEW_HOST
        if key is None and _same_host(account, form.host_url.data or ""):
            key = _stored_key(account)
            problem = UNREADABLE_KEY if account.api_key_encrypted else "Enter the account's OpenAlgo API key."
        if key is None:
            form.api_key.errors = [*form.api_key.errors, problem]
        else:
            result = _run_test(form.host_url.data or "", key, account_id=account.id)
            db().commit()
    return render_template(
        "accounts/form.html", form=form, account=account, result=result, result_text=_text_or_none(result)
    ), (200 if result is not None else 400)


@bp.route("/<id:account_id>/test", methods=["POST"])
def test_saved(account_id: int) -> ResponseReturnValue:
    """Test a saved account's connection with its stored key and record the result."""
    require_confirmation()
    account = _own(account_id)
    if not account.api_key_encrypted:
        return redirect_to("accounts.index", "This account has no API key; edit it to add one.", "error")
    if not load_host_policy(db()).allows(account.host_url):
        return redirect_to("accounts.index", f"“{account.account_name}”: {HOST_NOT_ALLOWED}", "error")
    key = _stored_key(account)
    if key is None:
        return redirect_to("accounts.index", f"“{account.account_name}”: {UNREADABLE_KEY}", "error")
    result = _run_test(account.host_url, key, account_id=account.id)
    repo.record_connection_test(account, result, market_now())
    db().commit()
    return redirect_to(
        "accounts.index",
        f"“{account.account_name}”: {_result_text(result)}",
        "success" if result.ok else "warning",
    )


@bp.route("/<id:account_id>/delete", methods=["GET", "POST"])
def delete(account_id: int) -> ResponseReturnValue:
    """GET: what deleting would do (refused while anything is live; archive when it traded; delete
    otherwise). POST (confirmed): do it."""
    account = _own(account_id)
    session_db = db()
    user_id = me().id
    form = ConfirmForm()
    blockers, has_history = repo.retirement_plan(session_db, user_id, account)
    if not form.validate_on_submit():
        if form.is_submitted():
            abort(400)
        return render_template(
            "accounts/delete.html", account=account, form=form, blockers=blockers, has_history=has_history
        )
    name = account.account_name
    # A fresh transaction whose first statement takes the write lock (see retirement._lock).
    session_db.commit()
    try:
        outcome, promoted = repo.delete_account(session_db, user_id, account, now=now())
    except StillTradingError as exc:
        session_db.rollback()
        return redirect_to("accounts.index", str(exc), "error")
    except IntegrityError:
        # A journal row appeared between the check and the delete: the database refused (RESTRICT).
        session_db.rollback()
        return redirect_to(
            "accounts.index", f"“{name}” started trading meanwhile and was not deleted; try again.", "error"
        )
    archived = outcome is Retired.ARCHIVED
    log_activity(
        session_db,
        "account_archived" if archived else "account_deleted",
        user_id=user_id,
        account_id=account_id if archived else None,
        details=f"{name} (id {account_id})",
    )
    if promoted is not None:
        log_activity(
            session_db,
            "account_primary_changed",
            user_id=user_id,
            account_id=promoted.id,
            details=f"{promoted.account_name} takes over from {'archived' if archived else 'deleted'} {name}",
        )
    session_db.commit()
    if archived:
        return redirect_to(
            "accounts.index", f"Account “{name}” archived: hidden, its orders, trades and journal kept."
        )
    return redirect_to("accounts.index", f"Account “{name}” deleted.")


@bp.route("/<id:account_id>/primary", methods=["POST"])
def make_primary(account_id: int) -> ResponseReturnValue:
    """Make the account the user's primary (refused with a message when the rules do not allow it). An
    unhealthy account (key rejected, connection failed) needs ``confirm_unhealthy=yes``: without it the
    reply is a page saying what that means for the market-data feed."""
    require_confirmation()
    account = _own(account_id)
    if not repo.is_healthy(account) and request.form.get("confirm_unhealthy") != "yes":
        return render_template("accounts/primary_confirm.html", account=account, form=ConfirmForm())
    session_db = db()
    try:
        old = repo.set_primary(session_db, me().id, account)
    except repo.AccountRuleError as exc:
        session_db.rollback()
        return redirect_to("accounts.index", str(exc), "error")
    detail = f"{account.account_name} is the primary" + (f" (was {old.account_name})" if old else "")
    log_activity(
        session_db, "account_primary_changed", user_id=me().id, account_id=account.id, details=detail
    )
    session_db.commit()
    return redirect_to("accounts.index", f"“{account.account_name}” is now the primary account.")


@bp.route("/<id:account_id>/deactivate", methods=["POST"])
def deactivate(account_id: int) -> ResponseReturnValue:
    """Deactivate the account; if it was the primary, another active account (if any) takes over."""
    require_confirmation()
    account = _own(account_id)
    session_db = db()
    promoted = repo.deactivate(session_db, me().id, account)
    log_activity(
        session_db,
        "account_deactivated",
        user_id=me().id,
        account_id=account.id,
        details=account.account_name,
    )
    message = f"“{account.account_name}” is deactivated."
    if promoted is not None:
        log_activity(
            session_db,
            "account_primary_changed",
            user_id=me().id,
            account_id=promoted.id,
            details=f"{promoted.account_name} takes over from {account.account_name}",
        )
        message += f" “{promoted.account_name}” is now the primary."
    session_db.commit()
    return redirect_to("accounts.index", message)


@bp.route("/<id:account_id>/activate", methods=["POST"])
def activate(account_id: int) -> ResponseReturnValue:
    """Activate the account again."""
    require_confirmation()
    account = _own(account_id)
    session_db = db()
    repo.activate(session_db, me().id, account)
    log_activity(
        session_db, "account_activated", user_id=me().id, account_id=account.id, details=account.account_name
    )
    session_db.commit()
    return redirect_to("accounts.index", f"“{account.account_name}” is active.")


@bp.route("/<id:account_id>/resume-entries", methods=["GET", "POST"])
def resume_entries(account_id: int) -> ResponseReturnValue:
    """GET: confirm resuming new entries on an account whose entries are halted (reconciliation found a
    gap it could not explain, or an operator halted it), with the account's open alerts. POST
    (CSRF-checked): clear the halt (logged as ``account_entries_resumed``). Another user's account is a
    404; for an account that is not halted the page says so and a POST goes back to the account."""
    account = _own(account_id)
    session_db = db()
    if account.entries_halted_reason is None and request.method == "POST":
        return redirect_to(
            "accounts.detail", "New entries are not halted on this account.", account_id=account.id
        )
    if request.method == "GET":
        alerts = [a for a in open_alerts(session_db, me().id) if a.account_id == account.id]
        return render_template(
            "accounts/resume_confirm.html", account=account, alerts=alerts, form=ConfirmForm()
        )
    require_confirmation()
    resume_account_entries(session_db, account.id, user_id=me().id, now=now())
    session_db.commit()
    return redirect_to(
        "accounts.detail",
        f"New entries on “{account.account_name}” are allowed again.",
        account_id=account.id,
    )
