"""Texts in several languages: the one model every campaign text uses.

A localized text is a mapping from a locale (``en``, ``de``, ``fr-CH``) to the text. The text a
visitor sees is the first found of: their locale, its language (``fr`` for ``fr-CH``), the site's
locale and its language, then the product's own default for that field in the same order, then
its English default. A field left empty in a campaign therefore reads in the visitor's language
whenever the product has a default for it. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

LOCALE_PATTERN = r"^[a-z]{2}(-[A-Za-z]{2})?$"
_LOCALE = re.compile(LOCALE_PATTERN)

Locale = Annotated[str, Field(pattern=LOCALE_PATTERN)]
# A localized text of a campaign: locale -> text (up to 300 characters each).
Localized = dict[Locale, Annotated[str, Field(max_length=300)]]


# The product's own texts, for every field a campaign may leave empty.
DEFAULTS: dict[str, dict[str, str]] = {
    "consent_label": {
        "en": "Email me offers and news. I can unsubscribe at any time.",
        "de": "Schickt mir Angebote und Neuigkeiten per E-Mail. Ich kann mich jederzeit abmelden.",
    },
    "sms_consent_label": {
        "en": "Text me offers. I can reply STOP at any time.",
        "de": "Schickt mir Angebote per SMS. Ich kann jederzeit mit STOP abbestellen.",
    },
    "sms_submit": {
        "en": "Text me a code",
        "de": "Code per SMS senden",
    },
    "sms_code": {
        "en": "Enter the code we texted you",
        "de": "Code aus der SMS eingeben",
    },
    "sms_confirm": {
        "en": "Confirm",
        "de": "Bestätigen",
    },
    "thanks": {
        "en": "Thank you!",
        "de": "Vielen Dank!",
    },
    "thanks_with_code": {
        "en": "Thank you! Here is your code:",
        "de": "Vielen Dank! Hier ist Ihr Code:",
    },
    "submit_with_email": {
        "en": "Email me my code",
        "de": "Code per E-Mail senden",
    },
    "submit_on_screen": {
        "en": "Show my code",
        "de": "Code anzeigen",
    },
    "submit": {
        "en": "Subscribe",
        "de": "Anmelden",
    },
    "privacy_link": {
        "en": "Privacy policy",
        "de": "Datenschutzerklärung",
    },
    "code_emailed": {
        "en": "We have also sent it to {email}.",
        "de": "Wir haben ihn auch an {email} geschickt.",
    },
    "code_after_confirmation": {
        "en": "Confirm your address with the link we sent to {email}, and we will email it too.",
        "de": "Bestätigen Sie Ihre Adresse über den Link an {email}, dann senden wir ihn auch "
        "per E-Mail.",
    },
}


def _candidates(locale: str, fallback: str) -> list[str]:
    out: list[str] = []
    for value in (locale, fallback):
        if value and _LOCALE.fullmatch(value):
            for candidate in (value, value.split("-")[0]):
                if candidate not in out:
                    out.append(candidate)
    return out


def pick(texts: Mapping[str, str] | None, locale: str, site_locale: str, field: str = "") -> str:
    """The text of ``texts`` for a visitor in ``locale`` on a site in ``site_locale``, falling
    back to the product's default for ``field`` (see the module's docstring); ``""`` when none
    is found."""
    order = _candidates(locale, site_locale)
    for candidate in order:
        text = (texts or {}).get(candidate, "").strip()
        if text:
            return text
    defaults = DEFAULTS.get(field, {})
    for candidate in [*order, "en"]:
        if defaults.get(candidate):
            return defaults[candidate]
    return ""


def pick_word(translations: Mapping[str, str], base: str, locale: str) -> str:
    """A campaign text that has a base (written in the site's language) and translations: the
    one for the visitor's locale, else for its language (``de`` for ``de-AT``), else ``base``.
    The base is the site's text, so it is the fallback for every other language."""
    for candidate in _candidates(locale, ""):
        text = translations.get(candidate, "").strip()
        if text:
            return text
    return base


def wording_version(text: str, locale: str) -> str:
    """A short stable name of the exact sentence a visitor agreed to, kept in the consent record
    (``en:3f9a0c1d2b4e``); the site keeps each version's text (:func:`consent wordings
    <widget_server.store.keys.Keys.consent_wordings>`)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{(locale or 'en').split('-')[0]}:{digest}"
