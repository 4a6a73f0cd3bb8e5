"""One error family: each error knows its HTTP status and the message a user may see."""

from __future__ import annotations


class AppError(Exception):
    """Base of every error we raise on purpose. `user_message` is safe to show in a browser."""

    status = 500
    user_message = "Something went wrong."

    def __init__(self, detail: str | None = None, *, user_message: str | None = None):
        super().__init__(detail or self.user_message)
        self.detail = detail or self.user_message
        if user_message:
            self.user_message = user_message


class InputError(AppError):
    """The user (clinician, CLI user) gave values we reject; nothing was built or written."""

    status = 400
    user_message = "Some values were not accepted."

    def __init__(self, problems: list[str] | str):
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = problems
        super().__init__("; ".join(problems), user_message="; ".join(problems))


class UnreadableInput(AppError):
    """A file or payload that is not the FHIR we expect (CLI exit 2)."""

    status = 400
    user_message = "The data could not be read."


class LaunchError(AppError):
    """A SMART launch that cannot proceed (unknown iss, bad state, denied authorization)."""

    status = 400
    user_message = "The app could not be launched. Please launch it again from the EHR."


class SessionExpired(AppError):
    status = 401
    user_message = "Your session has ended. Please launch the app again from the EHR."


DIAGNOSTICS_SHOWN = 500  # characters of a server's OperationOutcome diagnostics shown on a page


class FhirServerError(AppError):
    """The FHIR server answered with an error (OperationOutcome diagnostics kept in detail and shown)."""

    status = 502
    user_message = "The EHR's FHIR server reported an error."

    def __init__(self, detail: str | None = None, *, http_status: int | None = None,
                 diagnostics: tuple[str, ...] = (), user_message: str | None = None):
        if diagnostics and user_message is None:  # the server's own words (an OperationOutcome) say what failed
            user_message = f"{self.user_message} It said: {'; '.join(diagnostics)[:DIAGNOSTICS_SHOWN]}"
        super().__init__(detail, user_message=user_message)
        self.http_status = http_status
        self.diagnostics = diagnostics


class FhirUnavailable(FhirServerError):
    """Timeouts, connection failures, 5xx after retries."""

    status = 503
    user_message = "The EHR's FHIR server could not be reached. Please try again."


class FhirAuthError(FhirServerError):
    """401/403 from the FHIR server: token expired or scope missing."""

    status = 401
    user_message = "The EHR refused access (the session may have expired). Please launch the app again."


class WriteRefused(AppError):
    """A sign/write that the rules or the server refuse; nothing was written."""

    status = 409
    user_message = "The order was not written."


class SessionStoreUnavailable(AppError):
    """The session store (Redis) did not answer; raised by `smart.store`, never a stack trace."""

    status = 503
    user_message = ("The app cannot reach its session store right now. Wait a minute, then launch the app "
                    "again from the EHR; if you had pressed Sign, check the patient's chart before signing again.")


class TooManyLaunches(AppError):
    """The cap on pending (not yet authorised) launches is reached; nothing was stored."""

    status = 503
    user_message = "The app is handling too many launches right now. Please try again in a few minutes."


class CsrfError(AppError):
    status = 400
    user_message = "This form has expired or did not come from this app. Reload the page and try again."


class LaunchMismatch(AppError):
    """A POST whose launch or patient is not the one this browser's launch holds; nothing was written."""

    status = 409


class SigningNotAllowed(AppError):
    """No validated prescriber (or no write grant): the assessment is shown, signing is refused."""

    status = 403
    user_message = "Signing is disabled for this launch."


class WriteNotCompleted(FhirServerError):
    """A write in steps stopped before the order became active; `left` names what the undo could not remove."""

    def __init__(self, cause: FhirServerError, left: tuple[str, ...]):
        super().__init__(f"sequential write stopped: {cause.detail}", http_status=cause.http_status,
                         diagnostics=cause.diagnostics, user_message=cause.user_message)
        self.cause = cause
        self.left = left
