"""Handing one committed email to the relay and settling its job, for every kind of email job.

The outcome of the send decides what happens to the job (see :mod:`widget_server.mail.jobs` for
the at-most-once guarantee): a failure known to happen before the relay accepted the message is
retried with exponential backoff (``retry_base_s * 2**attempts``, at most six hours apart,
``max_attempts`` in all) after the job's sent mark is released; a refusal ends the job (and a
refused recipient is suppressed as bounced); an uncertain outcome keeps the mark and never
retries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

from .context import MailContext
from .jobs import MailJob
from .send import MailTransport, PermanentSendError, TransientSendError, UncertainSendError

log = logging.getLogger("widget_server.mail")

MAX_RETRY_DELAY_S = 6 * 3600


async def deliver(
    ctx: MailContext,
    transport: MailTransport,
    job: MailJob,
    message: EmailMessage,
    now: float,
    *,
    release: Callable[[], Awaitable[object]] | None = None,
) -> str:
    """Send ``message`` and settle ``job``: ``sent``, ``retry``, ``failed`` or ``uncertain``.

    ``release`` undoes a sent mark kept outside the job's own step mark (None: the step mark,
    released by the scheduler). Counting a sent email is the caller's."""
    scheduler, metrics = ctx.scheduler, ctx.metrics
    try:
        await transport.send(message, sender=ctx.settings.from_address, recipient=job.email)
    except TransientSendError as exc:
        metrics.failures.labels("transient").inc()
        if release is not None:
            await release()  # certainly not accepted: it may go out later
        uncommit = release is None
        if job.attempts + 1 >= ctx.settings.max_attempts:
            log.warning("mail job %s gave up after %d attempts: %s", job.id, job.attempts + 1, exc)
            await scheduler.fail(job, retry_at=None, error=str(exc), uncommit=uncommit)
            return "failed"
        delay = min(ctx.settings.retry_base_s * 2**job.attempts, MAX_RETRY_DELAY_S)
        await scheduler.fail(job, retry_at=now + delay, error=str(exc), uncommit=uncommit)
        metrics.retries.inc()
        return "retry"
    except PermanentSendError as exc:
        metrics.failures.labels("permanent").inc()
        log.warning("mail job %s refused: %s", job.id, exc)
        if exc.recipient_refused:
            await scheduler.suppress(job.site, job.email, "bounced", now=now)
            metrics.unsubscribes.labels("bounced").inc()
        await scheduler.fail(job, retry_at=None, error=str(exc), uncommit=False)
        return "failed"
    except UncertainSendError as exc:
        # It may have arrived: keep the sent mark, never retry (at most once).
        metrics.failures.labels("uncertain").inc()
        log.warning("mail job %s may not have been delivered: %s", job.id, exc)
        await scheduler.complete(job)
        return "uncertain"
    await scheduler.complete(job)
    return "sent"
