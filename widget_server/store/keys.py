"""The Redis key layout: the only module that formats key and channel names.

Everything that belongs to one visitor shares the hash tag ``{site:visitor}``, so every multi-key
script touches a single slot and runs unchanged on one Valkey or on a Redis Cluster. Site keys and
visitor ids are validated by the protocol (letters, digits, ``-`` and ``_``), so they can never
contain ``{``, ``}`` or ``:``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "ws"

    # --- one visitor (one cluster slot) ------------------------------------------------------
    def tag(self, site: str, visitor: str) -> str:
        return f"{self.prefix}:{{{site}:{visitor}}}"

    def session(self, site: str, visitor: str, session_id: str) -> str:
        """Hash: the live session (pages, cart, signals, offers), sliding TTL."""
        return f"{self.tag(site, visitor)}:s:{session_id}"

    def visitor_in(self, site: str, key: str) -> str | None:
        """The visitor of a key under :meth:`tag` for ``site`` (a SCAN result), else None."""
        head = f"{self.prefix}:{{{site}:"
        end = key.find("}", len(head))
        return key[len(head) : end] if key.startswith(head) and end > len(head) else None

    def seen(self, site: str, visitor: str, session_id: str) -> str:
        """Set: message ids already applied to the session (replay protection)."""
        return f"{self.tag(site, visitor)}:seen:{session_id}"

    def sessions(self, site: str, visitor: str) -> str:
        """Set: session ids of the visitor, so erasure can find them."""
        return f"{self.tag(site, visitor)}:sids"

    def profile(self, site: str, visitor: str) -> str:
        """Hash: the visitor profile, retention TTL."""
        return f"{self.tag(site, visitor)}:profile"

    def orders(self, site: str, visitor: str) -> str:
        """Set: order ids already recorded (a purchase reported twice counts once)."""
        return f"{self.tag(site, visitor)}:orders"

    def opening(self, site: str, visitor: str) -> str:
        """String, a few seconds: the id of the session opened last, joined by racing opens."""
        return f"{self.tag(site, visitor)}:opening"

    def connections(self, site: str, visitor: str) -> str:
        """Hash: connection id -> node id of every live socket of the visitor."""
        return f"{self.tag(site, visitor)}:conns"

    def held(self, site: str, visitor: str) -> str:
        """Hash: the visitor's offers reserved under the site's frequency policy and not yet
        seen (token -> JSON, released when their time runs out), and ``done:<token>`` markers
        of the ones seen (see lua/offer_reserve.lua)."""
        return f"{self.tag(site, visitor)}:held"

    def visitor_keys(self, site: str, visitor: str) -> list[str]:
        """The fixed keys of a visitor (session keys are found through :meth:`sessions`)."""
        return [
            self.profile(site, visitor),
            self.sessions(site, visitor),
            self.orders(site, visitor),
            self.connections(site, visitor),
            self.opening(site, visitor),
            self.held(site, visitor),
        ]

    def trace(self, site: str, visitor: str, session_id: str) -> str:
        """List: the last decisions of a session with every campaign's reason (newest first)."""
        return f"{self.tag(site, visitor)}:trace:{session_id}"

    # --- one campaign (one cluster slot) -----------------------------------------------------
    def campaign_tag(self, site: str, campaign: str) -> str:
        return f"{self.prefix}:{{{site}:c:{campaign}}}"

    def campaign_visitor(self, site: str, campaign: str, visitor: str) -> str:
        """Hash: one visitor's caps, exposure, variant and code for one campaign."""
        return f"{self.campaign_tag(site, campaign)}:v:{visitor}"

    def campaign_impressions(self, site: str, campaign: str) -> str:
        """String counter: impressions of the campaign (the global cap)."""
        return f"{self.campaign_tag(site, campaign)}:impressions"

    def campaign_pending(self, site: str, campaign: str) -> str:
        """Sorted set: offers of the campaign reserved and not yet seen (token scored by the
        time the reservation runs out), counted against the global cap."""
        return f"{self.campaign_tag(site, campaign)}:pending"

    def code_pool(self, site: str, campaign: str) -> str:
        """List: unused codes uploaded for the campaign."""
        return f"{self.campaign_tag(site, campaign)}:pool"

    def issued_codes(self, site: str, campaign: str) -> str:
        """Hash: code -> JSON {visitor, variant, issued, expires, redeemed} of issued codes."""
        return f"{self.campaign_tag(site, campaign)}:codes"

    def campaign_stats(self, site: str, campaign: str, day: str, version: int = 1) -> str:
        """Hash: per-day counters by metric and variant (``exposures:A``, ``revenue:B``...)."""
        # A new experiment version (a changed split) counts apart from the earlier ones.
        stage = "" if version == 1 else f"e{version}:"
        return f"{self.campaign_tag(site, campaign)}:stats:{stage}{day}"

    def campaign_buyers(self, site: str, campaign: str, version: int = 1) -> str:
        """Hash: random buyer id -> JSON {a: arm, x: covariates at exposure, d: {day: revenue
        total at its end}} of one experiment version's attributed buyers."""
        return f"{self.campaign_tag(site, campaign)}:buyers:e{version}"

    # --- the site-wide experiment: the tool against its holdout (one cluster slot) ---------
    def site_experiment_tag(self, site: str) -> str:
        return f"{self.prefix}:{{{site}:h}}"

    def site_experiment_visitor(self, site: str, visitor: str) -> str:
        """Hash: one visitor's arm, exposure and attributed revenue in the site-wide
        experiment (lua/offer_visit.lua, lua/offer_attribute.lua)."""
        return f"{self.site_experiment_tag(site)}:v:{visitor}"

    def site_experiment_stats(self, site: str, day: str, version: int = 1) -> str:
        """Hash: per-day counters of the site-wide experiment (``exposures:tool``,
        ``revenue:holdout``...), and ``influenced_orders``, ``influenced_revenue``: orders that
        some campaign's offer, seen within its window, is attributed."""
        return f"{self.site_experiment_tag(site)}:stats:e{version}:{day}"

    def site_experiment_buyers(self, site: str, version: int = 1) -> str:
        """Hash: the site-wide experiment's buyers, as :meth:`campaign_buyers`."""
        return f"{self.site_experiment_tag(site)}:buyers:e{version}"

    def site_experiment_codes(self, site: str) -> str:
        """Never written: the slot's stand-in for offer_attribute.lua's issued codes."""
        return f"{self.site_experiment_tag(site)}:codes"

    def site_reached(self, site: str, day: str) -> str:
        """HyperLogLog: the visitors the tool reached on a day (the site's time zone)."""
        return f"{self.site_experiment_tag(site)}:reached:{day}"

    # --- one email flow's experiment (one cluster slot) -------------------------------------
    def flow_tag(self, site: str, flow: str) -> str:
        return f"{self.prefix}:{{{site}:f:{flow}}}"

    def flow_visitor(self, site: str, flow: str, visitor: str) -> str:
        """Hash: one visitor's arm (``email`` or ``holdout``), exposure, click and revenue for
        one email flow (what attributes a purchase to the flow)."""
        return f"{self.flow_tag(site, flow)}:v:{visitor}"

    def flow_stats(self, site: str, flow: str, stage: str, day: str) -> str:
        """Hash: per-UTC-day counters by metric and arm of one flow (``exposures:email``,
        ``conversions:holdout``...); ``stage`` changes with the flow's holdout share."""
        return f"{self.flow_tag(site, flow)}:stats:{stage}:{day}"

    # --- campaigns of a site -----------------------------------------------------------------
    def campaigns(self, site: str) -> str:
        """Hash: campaign id -> current campaign JSON."""
        return f"{self.prefix}:campaigns:{{{site}}}"

    def campaign_history(self, site: str, campaign: str) -> str:
        """List: every earlier version of a campaign (JSON with who and when), newest first."""
        return f"{self.prefix}:campaign-history:{{{site}}}:{campaign}"

    def v1_campaigns(self, site: str) -> str:
        """Where layout version 1 kept :meth:`campaigns` (read only to move it, see layout.py)."""
        return f"{self.prefix}:campaigns:{site}"

    def v1_campaign_history(self, site: str, campaign: str) -> str:
        """Where layout version 1 kept :meth:`campaign_history`."""
        return f"{self.prefix}:campaign-history:{site}:{campaign}"

    def layout(self) -> str:
        """String: the version of this key layout the store holds (see layout.py)."""
        return f"{self.prefix}:layout"

    def code_index(self, site: str) -> str:
        """Hash: code -> campaign id, to find which campaign issued a redeemed code."""
        return f"{self.prefix}:code-index:{site}"

    def consent_wordings(self, site: str) -> str:
        """Hash: consent wording version (``en:3f9a0c1d2b4e``) -> JSON {text, campaign, first}:
        the exact sentence each recorded consent agreed to."""
        return f"{self.prefix}:consent-wordings:{site}"

    def email_index(self, site: str) -> str:
        """Hash: lower-cased email -> visitor id, for orders reported by the shop's backend."""
        return f"{self.prefix}:emails:{site}"

    def live_offers(self, site: str) -> str:
        """Hash: campaign id -> unix time until which its live broadcast runs."""
        return f"{self.prefix}:live-offers:{site}"

    def live_runs(self, site: str) -> str:
        """List: every live broadcast started on the site (JSON campaign, started, until),
        newest first, for the reports of experiments that ran meanwhile."""
        return f"{self.prefix}:live-runs:{site}"

    # --- sites -------------------------------------------------------------------------------
    def site(self, site: str) -> str:
        """String: the site's JSON configuration."""
        return f"{self.prefix}:site:{site}"

    def site_index(self) -> str:
        """Set: every site key."""
        return f"{self.prefix}:sites"

    def live(self, site: str) -> str:
        """Sorted set: live connection ids of a site, scored by last refresh (unix seconds)."""
        return f"{self.prefix}:live:{site}"

    def rate(self, site: str, minute: str) -> str:
        """Hash: events, signals and offers of a site in one UTC minute (``YYYYMMDDHHMM``),
        short TTL (the admin's live view)."""
        return f"{self.prefix}:rate:{site}:{minute}"

    def decisions(self, site: str) -> str:
        """List: the site's latest decision traces with visitor and session ids, newest first."""
        return f"{self.prefix}:decisions:{site}"

    def session_owner(self, site: str, session_id: str) -> str:
        """String: the visitor id of a session that has decision traces (trace lookup by
        session id), with the traces' TTL."""
        return f"{self.prefix}:session-owner:{site}:{session_id}"

    # --- nodes and channels ------------------------------------------------------------------
    def nodes(self) -> str:
        """Sorted set: server node ids scored by last heartbeat (unix seconds)."""
        return f"{self.prefix}:nodes"

    def node_channel(self, node_id: str) -> str:
        """Pub/sub channel of one server node: messages for sockets that node holds."""
        return f"{self.prefix}:node:{node_id}"

    def broadcast_channel(self) -> str:
        """Pub/sub channel every node listens to: site-wide pushes and cache invalidation."""
        return f"{self.prefix}:broadcast"

    # --- product catalog of a site -----------------------------------------------------------
    def catalog(self, site: str) -> str:
        """Hash: product id -> product JSON imported from the site's feed."""
        return f"{self.prefix}:catalog:{site}"

    def catalog_hashes(self, site: str) -> str:
        """Hash: product id -> content hash of the feed product (skips unchanged rows)."""
        return f"{self.prefix}:catalog-hash:{site}"

    def catalog_learned(self, site: str) -> str:
        """Hash: product id -> product JSON learned from product views, for ids not in the feed."""
        return f"{self.prefix}:catalog-learned:{site}"

    def catalog_version(self, site: str) -> str:
        """String counter: bumped whenever the catalog changes (similarity indexes rebuild)."""
        return f"{self.prefix}:catalog-version:{site}"

    def catalog_last_import(self, site: str) -> str:
        """String: JSON summary of the latest feed import (when, from where, what it did)."""
        return f"{self.prefix}:catalog-import:{site}"

    def catalog_import_lock(self, site: str) -> str:
        """String with a TTL: held while a feed upload writes the site's catalog (one at a time)."""
        return f"{self.prefix}:catalog-import-lock:{site}"

    def coview(self, site: str, product_id: str) -> str:
        """Sorted set: other product id -> times viewed in the same session, top members only."""
        return f"{self.prefix}:coview:{site}:{product_id}"

    def cocart(self, site: str, product_id: str) -> str:
        """Sorted set: other product id -> times in the same cart, top members only."""
        return f"{self.prefix}:cocart:{site}:{product_id}"

    # --- who is interested in what (catalog/interest.py): each key on a slot of its own ---------
    def interest(self, site: str, product_id: str) -> str:
        """Sorted set: visitor id -> unix time they last viewed or carted the product (the
        latest visitors only, the last 30 days)."""
        return f"{self.prefix}:interest:{site}:{product_id}"

    def interest_category(self, site: str, category_digest: str) -> str:
        """Sorted set: visitor id -> unix time they last viewed a product of the category
        (by digest of its lower-cased name)."""
        return f"{self.prefix}:interest-cat:{site}:{category_digest}"

    def interest_of(self, site: str, visitor: str) -> str:
        """Sorted set: ``p:<product id>`` and ``c:<category digest>`` -> unix time, every entry
        of the visitor in the two indexes above, so erasure finds them."""
        return f"{self.prefix}:interest-of:{site}:{visitor}"

    # --- email flows: the mail queue lives in one cluster slot (hash tag ``{mail}``) ---------
    # Job, lease, once-only and suppression keys share the tag so the claim and commit scripts
    # can check and change them atomically. Email volume is far below event volume, so a single
    # slot is not a hot spot. Email addresses never appear in key names: callers pass a digest.
    def mail_tag(self) -> str:
        return f"{self.prefix}:{{mail}}"

    def mail_due(self) -> str:
        """Sorted set: job id -> unix time the email is due."""
        return f"{self.mail_tag()}:due"

    def mail_leases(self) -> str:
        """Sorted set: job id -> lease deadline of jobs a worker has claimed."""
        return f"{self.mail_tag()}:leases"

    def mail_job(self, job_id: str) -> str:
        """Hash: one scheduled email (site, visitor, flow, step, address, snapshot, lease token)."""
        return f"{self.mail_tag()}:job:{job_id}"

    def mail_sent(self, site: str, visitor: str) -> str:
        """Hash: ``flow:step`` -> ``token|time`` of every email step committed for the visitor."""
        return f"{self.mail_tag()}:sent:{site}:{visitor}"

    def mail_visitor_jobs(self, site: str, visitor: str) -> str:
        """Set: job ids scheduled for the visitor, so cancelling finds them."""
        return f"{self.mail_tag()}:vjobs:{site}:{visitor}"

    def mail_email_visitors(self, site: str, email_digest: str) -> str:
        """Set: visitor ids with jobs for one address (by digest), so unsubscribing finds them."""
        return f"{self.mail_tag()}:evis:{site}:{email_digest}"

    def mail_replenish(self, site: str) -> str:
        """Hash: ``<category>:n`` and ``<category>:log``, the count and the sum of the natural
        logs (days) of the site's repeat-order intervals per category (replenishment)."""
        return f"{self.prefix}:replenish:{site}"

    def mail_budget(self, site: str, visitor: str) -> str:
        """Sorted set: the visitor's marketing messages committed, by time (the budget)."""
        return f"{self.mail_tag()}:budget:{site}:{visitor}"

    def mail_daily(self, site: str, visitor: str) -> str:
        """Hash: UTC day -> emails committed for the visitor that day (the daily cap)."""
        return f"{self.mail_tag()}:daily:{site}:{visitor}"

    def mail_suppressed(self, site: str) -> str:
        """Hash: lower-cased email -> JSON {reason, at}: unsubscribed, bounced or complained."""
        return f"{self.mail_tag()}:suppressed:{site}"

    def mail_withdrawn(self, site: str) -> str:
        """Hash: visitor id -> unix time marketing consent was withdrawn."""
        return f"{self.mail_tag()}:withdrawn:{site}"

    def mail_flows(self, site: str) -> str:
        """String: the site's email flow configuration JSON."""
        return f"{self.prefix}:mail-flows:{site}"

    def mail_stats(self, site: str, flow: str) -> str:
        """Hash: counters by event and step (``sent:0``, ``clicks:1``, ``suppressed:purchased``)."""
        return f"{self.prefix}:mail-stats:{site}:{flow}"

    def mail_rate(self, domain: str) -> str:
        """Hash: token bucket of sends to one recipient domain."""
        return f"{self.prefix}:mail-rate:{domain}"

    # --- SMS: phone numbers never appear in key names, callers pass a digest ---------------
    def sms_suppressed(self, site: str) -> str:
        """Hash: E.164 number -> JSON {reason, at}: stopped (STOP), invalid."""
        return f"{self.mail_tag()}:sms-suppressed:{site}"

    def sms_phone_visitors(self, site: str, phone_digest: str) -> str:
        """Set: visitors who confirmed the number (STOP cancels their pending SMS)."""
        return f"{self.mail_tag()}:sms-pvis:{site}:{phone_digest}"

    def sms_message(self, sid: str) -> str:
        """Hash: an SMS sent by a flow (site, flow, step, final status), for its callbacks."""
        return f"{self.prefix}:sms-msg:{sid}"

    def sms_code(self, site: str, visitor: str) -> str:
        """Hash: the visitor's pending phone confirmation (number, hashed code, attempts)."""
        return f"{self.tag(site, visitor)}:sms-code"

    def sms_sends(self, site: str, who: str) -> str:
        """String: confirmation codes sent lately to a number digest or a visitor (a counter)."""
        return f"{self.prefix}:sms-sends:{site}:{who}"

    def sms_link(self, link_id: str) -> str:
        """String: JSON of a short SMS link (site, flow, step, visitor, target)."""
        return f"{self.prefix}:sms-link:{link_id}"

    def sms_links(self, site: str, visitor: str) -> str:
        """Set: the tokens of the short SMS links (:meth:`sms_link`) made for the visitor, so
        erasure finds them; kept as long as the newest link."""
        return f"{self.tag(site, visitor)}:sms-links"

    # --- admin -------------------------------------------------------------------------------
    # Email addresses and IPs never appear in key names: callers pass a digest.
    def site_seen(self, site: str) -> str:
        """String: unix time the widget last connected from the site (the admin's install check)."""
        return f"{self.prefix}:site-seen:{site}"

    def admin_users(self) -> str:
        """Hash: lower-cased email -> admin account JSON (role, password hash, generation)."""
        return f"{self.prefix}:admin:users"

    def admin_session(self, session_digest: str) -> str:
        """Hash: one admin sign-in (email, CSRF token, created, last seen), idle TTL."""
        return f"{self.prefix}:admin:session:{session_digest}"

    def admin_login_failures(self, scope: str, subject_digest: str) -> str:
        """String counter: failed sign-ins of one account or one IP (``scope``), expiring."""
        return f"{self.prefix}:admin:failures:{scope}:{subject_digest}"

    def admin_audit(self) -> str:
        """List: audit entries (who, what, when, before/after) of admin changes, newest first."""
        return f"{self.prefix}:admin:audit"

    # --- consent -----------------------------------------------------------------------------
    # Double opt-in confirmation emails ride the mail queue, so their keys share its ``{mail}``
    # tag. Email addresses never appear in key names: callers pass a digest.
    def mail_rewards(self, site: str, visitor: str) -> str:
        """Hash: campaign id -> "1" once the email with the code of that campaign's email
        capture was queued for the visitor (once per campaign, kept two days)."""
        return f"{self.mail_tag()}:reward:{site}:{visitor}"

    def mail_confirmations(self, site: str, visitor: str) -> str:
        """Hash: email digest -> UTC day a confirmation email to that address was last queued
        for the visitor (at most one per address, visitor and day)."""
        return f"{self.mail_tag()}:confirm:{site}:{visitor}"
