"""The admin for marketers at ``/admin``: server-rendered pages for sites, campaigns, A/B reports,
the live view, visitor decision traces, accounts and the audit log (routes in :mod:`.routes`)."""
