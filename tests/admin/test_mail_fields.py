"""An email flow edited with form fields: settings, emails and each email's words per language,
previewed beside the form before saving; bad input stays in the form and nothing is saved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from widget_server.mail.flows import DEFAULT_CONFIG, FlowStep, load_config
from widget_server.mail.message import MailRenderer, MailView

from ..support import ServerProcess, add_site
from .test_admin import KEYS, AdminClient, form_fields, make_user
from .test_browser import shot, signed_in_page


@pytest.fixture(scope="module")
def editor(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, "editor")).status_code == 303
    yield client
    client.close()


def page_of(site: str, flow: str = "cart") -> str:
    return f"/admin/sites/{site}/emails/{flow}/fields"


def submitted(client: AdminClient, site: str, flow: str = "cart") -> dict[str, str]:
    """The form as a browser submits it (the CSRF token is added by post())."""
    page = client.get(page_of(site, flow))
    assert page.status_code == 200
    fields = {name: values[-1] for name, values in form_fields(page.text, "flow-form").items()}
    fields.pop("csrf")
    return fields


def stored(r: redis.Redis, site: str) -> Any:
    raw = r.get(KEYS.mail_flows(site))
    return load_config(raw) if raw else DEFAULT_CONFIG


def test_the_form_shows_the_flow_and_saves_what_is_typed(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site)
    assert form["steps.0.delay_minutes"] == "60" and form["steps.0.template"] == "cart"
    assert form["steps.0.subject.de"] == "Ihr Warenkorb wartet" and "enabled" in form
    assert form["holdout"] == "0" and form["steps.0.texts.de.heading"] == ""
    form.update({
        "steps.0.delay_minutes": "30", "holdout": "10", "sms_holdout": "20",
        "steps.0.subject.en": "Forgot something, {shop}?",
        "steps.0.texts.de.heading": "Noch da!", "steps.0.texts.de.intro": "Zeile eins\nZeile zwei",
        "steps.1.code": "BACK5", "steps.1.code_valid_hours": "48", "action": "save",
    })  # fmt: skip
    saved = editor.post(page_of(site), form)
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/admin/sites/{site}/emails?notice=saved"
    flow = stored(r, site).flow("cart")
    assert flow is not None and flow.holdout == 0.1 and flow.sms_holdout == 0.2
    first, second = flow.steps[0], flow.steps[1]
    assert first.delay_minutes == 30 and first.subject["en"] == "Forgot something, {shop}?"
    assert first.texts == {"de": {"heading": "Noch da!", "intro": "Zeile eins\nZeile zwei"}}
    assert (second.code, second.code_valid_hours) == ("BACK5", 48)
    assert stored(r, site).flow("browse") == DEFAULT_CONFIG.flow("browse")  # the others stay
    audit = [json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 50)]
    assert any(e["action"] == "mail.flows.update" and e["site"] == site for e in audit)


def test_bad_input_stays_in_the_form_next_to_its_field_and_nothing_is_saved(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site)
    cases = {
        "steps.0.delay_minutes": ("soon", "Enter a number."),
        "holdout": ("95", "Use a percentage from 0 to 90."),
        "sms_holdout": ("60", "Use a percentage from 0 to 50."),
        "steps.1.code": ("no spaces", "String should match pattern"),
        "steps.0.texts.en.heading": ("x" * 201, "The heading is at most 200 characters."),
        "steps.0.texts.en.cta": ("Two\nlines", "The button is one line."),
    }
    for name, (value, message) in cases.items():
        answer = editor.post(page_of(site), {**form, name: value, "action": "save"})
        assert answer.status_code == 422, name
        assert f'id="err-{name}">{message}' in answer.text, name
        assert "Nothing was saved." in answer.text
        kept = form_fields(answer.text, "flow-form")
        assert kept[name] == [value.replace("\n", "\r\n")] or kept[name] == [value], name
        assert r.get(KEYS.mail_flows(site)) is None  # still the defaults: nothing saved
    no_subject = {**form, "steps.2.subject.en": "", "steps.2.subject.de": "", "action": "save"}
    answer = editor.post(page_of(site), no_subject)
    assert answer.status_code == 422
    assert 'id="err-steps.2.subject">Write a subject in at least one language.' in answer.text
    # Delays must not decrease: an error for the flow, said above the form.
    later_first = {**form, "steps.0.delay_minutes": "5000", "action": "save"}
    answer = editor.post(page_of(site), later_first)
    assert answer.status_code == 422 and "Step delays must not decrease" in answer.text


def default_steps(name: str) -> Any:
    flow = DEFAULT_CONFIG.flow(name)
    assert flow is not None
    return flow.steps


def flow_in_audit(r: redis.Redis, site: str, flow: str) -> tuple[Any, Any]:
    """The flow before and after the newest audited save of the site's email flows."""
    for raw in r.lrange(KEYS.admin_audit(), 0, 50):
        entry = json.loads(raw)
        if entry["action"] == "mail.flows.update" and entry["site"] == site:
            before, after = entry["before"], entry["after"]
            return (next(f for f in before["flows"] if f["name"] == flow) if before else None,
                    next(f for f in after["flows"] if f["name"] == flow))  # fmt: skip
    raise AssertionError("no audit entry")


def test_the_priority_and_each_kind_s_own_settings_are_saved(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    cart = editor.get(page_of(site)).text
    assert "Empty: the default for this kind of flow, 80." in cart  # KIND_PRIORITY["cart"]
    form = submitted(editor, site)
    assert form["priority"] == ""
    assert not {"min_drop_percent", "low_stock_quantity", "categories.0.name"} & set(form)
    saved = editor.post(page_of(site), {**form, "priority": "95", "action": "save"})
    assert saved.status_code == 303
    flow = stored(r, site).flow("cart")
    assert flow is not None and flow.priority == 95 and flow.rank == 95
    assert flow_in_audit(r, site, "cart")[1]["priority"] == 95
    form = submitted(editor, site)
    assert form["priority"] == "95"
    assert editor.post(page_of(site), {**form, "priority": "", "action": "save"}).status_code == 303
    flow = stored(r, site).flow("cart")
    assert flow is not None and flow.priority is None and flow.rank == 80  # the default again

    # Replenishment: reminder days by category, in rows; empty rows are ignored.
    form = submitted(editor, site, "replenishment")
    assert (
        "Empty: the default for this kind of flow, 45."
        in editor.get(page_of(site, "replenishment")).text
    )
    rows = sorted(name for name in form if name.startswith("categories."))
    assert rows == [f"categories.{n}.{f}" for n in range(3) for f in ("days", "name")]
    assert all(form[name] == "" for name in rows) and "min_drop_percent" not in form
    form.update({
        "categories.0.name": "Coffee", "categories.0.days": "30",
        "categories.2.name": " Tea > Green ", "categories.2.days": "45", "action": "save",
    })  # fmt: skip
    assert editor.post(page_of(site, "replenishment"), form).status_code == 303
    flow = stored(r, site).flow("replenishment")
    assert flow is not None and flow.categories == {"Coffee": 30, "Tea > Green": 45}
    before, after = flow_in_audit(r, site, "replenishment")
    assert before["categories"] == {} and after["categories"] == {"Coffee": 30, "Tea > Green": 45}
    form = submitted(editor, site, "replenishment")
    assert (form["categories.0.name"], form["categories.0.days"]) == ("Coffee", "30")
    assert (form["categories.1.name"], form["categories.1.days"]) == ("Tea > Green", "45")
    assert form["categories.4.name"] == "" and "categories.5.name" not in form
    # Emptying a row removes its category; the other settings of the flow stay.
    form.update({"categories.0.name": "", "categories.0.days": "", "action": "save"})
    assert editor.post(page_of(site, "replenishment"), form).status_code == 303
    flow = stored(r, site).flow("replenishment")
    assert flow is not None and flow.categories == {"Tea > Green": 45}
    assert flow.steps == default_steps("replenishment") and not flow.enabled

    # Price drop and low stock: their thresholds, only on their own forms.
    form = submitted(editor, site, "price_drop")
    assert form["min_drop_percent"] == "5" and "low_stock_quantity" not in form
    form.update({"min_drop_percent": "12.5", "priority": "75", "action": "save"})
    assert editor.post(page_of(site, "price_drop"), form).status_code == 303
    form = submitted(editor, site, "low_stock")
    assert form["low_stock_quantity"] == "5" and "min_drop_percent" not in form
    form.update({"low_stock_quantity": "3", "action": "save"})
    assert editor.post(page_of(site, "low_stock"), form).status_code == 303
    config = stored(r, site)
    drop, low = config.flow("price_drop"), config.flow("low_stock")
    assert drop is not None and (drop.min_drop_percent, drop.priority) == (12.5, 75)
    assert low is not None and low.low_stock_quantity == 3 and low.priority is None
    assert flow_in_audit(r, site, "low_stock")[1]["low_stock_quantity"] == 3
    assert config.flow("replenishment") == flow  # saving another flow keeps this one


def test_bad_flow_settings_stay_in_the_form_next_to_their_field_and_nothing_is_saved(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    whole = "Use a whole number from 0 to 100, or leave it empty for the default."
    days = "Use a whole number of days from 1 to 365."
    name = "Use at most 200 characters, on one line."
    cases: list[tuple[str, dict[str, str], str, str]] = [
        ("cart", {"priority": "101"}, "priority", whole),
        ("cart", {"priority": "-1"}, "priority", whole),
        ("cart", {"priority": "50.5"}, "priority", whole),
        ("cart", {"priority": "high"}, "priority", "Enter a number."),
        ("replenishment", {"categories.0.name": "Coffee", "categories.0.days": "0"},
         "categories.0.days", days),
        ("replenishment", {"categories.0.name": "Coffee", "categories.0.days": "366"},
         "categories.0.days", days),
        ("replenishment", {"categories.1.name": "Coffee", "categories.1.days": "weekly"},
         "categories.0.days", "Enter a number."),  # the first row typed is the first row
        ("replenishment", {"categories.0.name": "x" * 201, "categories.0.days": "30"},
         "categories.0.name", name),
        ("replenishment", {"categories.0.name": "Tea\x07Green", "categories.0.days": "30"},
         "categories.0.name", name),
        ("replenishment", {"categories.0.name": "Tea\nGreen", "categories.0.days": "30"},
         "categories.0.name", name),
        ("replenishment", {"categories.0.days": "30"}, "categories.0.name",
         "Name the category (or empty the row to remove it)."),
        ("replenishment", {"categories.0.name": "Coffee", "categories.0.days": "30",
                           "categories.1.name": "COFFEE", "categories.1.days": "20"},
         "categories.1.name", "This category is in row 1 already."),
        ("price_drop", {"min_drop_percent": "0"}, "min_drop_percent",
         "Use a percentage from 0.1 to 90."),
        ("price_drop", {"min_drop_percent": ""}, "min_drop_percent", "Enter a number."),
        ("low_stock", {"low_stock_quantity": "0"}, "low_stock_quantity",
         "Use a whole number of units from 1 to 10000."),
    ]  # fmt: skip
    forms = {flow: submitted(editor, site, flow) for flow, *_ in cases}
    for flow, typed, field, message in cases:
        answer = editor.post(page_of(site, flow), {**forms[flow], **typed, "action": "save"})
        assert answer.status_code == 422, (flow, typed)
        assert f'id="err-{field}">{message}</p>' in answer.text, (flow, typed)
        assert f'id="f-{field}"' in answer.text and "Nothing was saved." in answer.text
        assert f'aria-describedby="err-{field}' in answer.text
        kept = {name: values[-1] for name, values in form_fields(answer.text, "flow-form").items()}
        for name, value in typed.items():  # what was typed stays (the rows typed come first)
            if "\n" not in value:
                assert value.strip() in kept.values(), (name, value)
        assert r.get(KEYS.mail_flows(site)) is None, (flow, typed)  # still the defaults
    assert not any(json.loads(e)["site"] == site for e in r.lrange(KEYS.admin_audit(), 0, 50))


def test_more_category_rows_are_added_without_a_script(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site, "replenishment")
    assert form["category_rows"] == "3"
    filled = {f"categories.{n}.{f}": v for n in range(3)
              for f, v in (("name", f"c{n}"), ("days", str(n + 10)))}  # fmt: skip
    more = editor.post(page_of(site, "replenishment"), {**form, **filled, "action": "categories"})
    assert more.status_code == 200 and r.get(KEYS.mail_flows(site)) is None  # not saved
    fields = {name: values[-1] for name, values in form_fields(more.text, "flow-form").items()}
    assert [fields[f"categories.{n}.name"] for n in range(6)] == ["c0", "c1", "c2", "", "", ""]
    assert "categories.6.name" not in fields and fields["category_rows"] == "6"
    fields.pop("csrf")
    fields.update({"categories.4.name": "c4", "categories.4.days": "7", "action": "save"})
    assert editor.post(page_of(site, "replenishment"), fields).status_code == 303
    flow = stored(r, site).flow("replenishment")
    assert flow is not None and flow.categories == {"c0": 10, "c1": 11, "c2": 12, "c4": 7}
    # A save from the page as it was before that save is refused and keeps what was typed.
    stale = {**form, "categories.0.name": "Tea", "categories.0.days": "60", "action": "save"}
    refused = editor.post(page_of(site, "replenishment"), stale)
    assert refused.status_code == 409 and "Someone saved the email flows" in refused.text
    assert form_fields(refused.text, "flow-form")["categories.0.name"] == ["Tea"]
    assert stored(r, site).flow("replenishment") == flow


def test_a_save_over_a_newer_one_is_refused(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    mine, theirs = submitted(editor, site), submitted(editor, site)
    theirs.update({"steps.0.delay_minutes": "45", "action": "save"})
    assert editor.post(page_of(site), theirs).status_code == 303
    mine.update({"steps.0.delay_minutes": "15", "action": "save"})
    refused = editor.post(page_of(site), mine)
    assert refused.status_code == 409 and "Someone saved the email flows" in refused.text
    assert form_fields(refused.text, "flow-form")["steps.0.delay_minutes"] == ["15"]  # kept
    flow = stored(r, site).flow("cart")
    assert flow is not None and flow.steps[0].delay_minutes == 45


def test_emails_are_added_and_removed_in_the_form_before_saving(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site)
    removed = editor.post(page_of(site), {**form, "action": "remove:1"})
    fields = form_fields(removed.text, "flow-form")
    assert removed.status_code == 200 and "steps.2.delay_minutes" not in fields
    assert fields["steps.1.delay_minutes"] == ["4320"]  # the third became the second
    assert r.get(KEYS.mail_flows(site)) is None  # not saved yet
    added = editor.post(page_of(site), {**form, "action": "add"})
    fields = form_fields(added.text, "flow-form")
    assert fields["steps.3.delay_minutes"] == [""] and fields["steps.3.template"] == ["cart"]


def test_the_preview_shows_what_is_typed_before_it_is_saved(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site)
    draft = f"/admin/sites/{site}/emails/cart/draft"
    german = editor.post(draft, {**form, "steps.1.texts.de.heading": "Immer noch da <b>",
                                 "preview": "1:de"})  # fmt: skip
    assert german.status_code == 200 and "sandbox" in german.headers["content-security-policy"]
    assert "Immer noch da &lt;b&gt;" in german.text  # escaped
    assert "<title>Ihr Warenkorb bei" in german.text  # the second email's German subject
    english = editor.post(draft, {**form, "preview": "1:en"})
    assert "You left something behind" in english.text  # the template's words
    broken = editor.post(draft, {**form, "steps.0.delay_minutes": "soon", "preview": "0:en"})
    assert broken.status_code == 422 and "Enter a number." in broken.text
    assert r.get(KEYS.mail_flows(site)) is None


def test_the_worker_renders_a_step_with_its_own_words_in_its_language() -> None:
    flow = DEFAULT_CONFIG.flows[0].model_copy(update={"steps": [FlowStep(
        delay_minutes=60, template="cart", subject={"en": "Hi", "de": "Hallo"},
        texts={"de": {"heading": "Noch da, {shop}?", "cta": "Zum Warenkorb"}},
    )]})  # fmt: skip
    renderer = MailRenderer()
    view = dict(shop_name="Laden", currency="EUR", action_url="https://shop.test/cart",
                unsubscribe_url="https://shop.test/u", shop_url="https://shop.test/")  # fmt: skip
    german = renderer.render(flow, 0, MailView(locale="de-AT", **view))  # type: ignore[arg-type]
    assert "Noch da, Laden?" in german.html and "Zum Warenkorb" in german.html
    assert "Noch da, Laden?" in german.text
    english = renderer.render(flow, 0, MailView(locale="en", **view))  # type: ignore[arg-type]
    assert "Noch da" not in english.html and "You left something behind" in english.html
    with pytest.raises(ValueError, match="not one of"):
        FlowStep(delay_minutes=1, template="cart", subject="x", texts={"en": {"footer": "x"}})


@pytest.mark.browser
def test_the_preview_follows_the_typing_without_a_reload(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    with signed_in_page(server, make_user(redis_url, "editor")) as (page, _):
        page.goto(f"{server.url}/admin/sites/{site}/emails")
        page.get_by_role("link", name="Edit this flow (cart)").click()
        page.wait_for_url(f"**{page_of(site)}")
        page.evaluate("window.stayed = true")
        frame = page.frame_locator("#preview-frame")
        frame.get_by_text("You left something behind").wait_for()  # the first preview
        page.get_by_label("Heading (en)").first.fill("Your basket misses you")
        frame.get_by_text("Your basket misses you").wait_for()
        assert page.evaluate("window.stayed") is True  # no reload
        # Editing the second email's German words previews that email in German.
        page.locator("#step-1 summary", has_text="Words in de").click()
        page.get_by_label("Heading (de)").nth(1).fill("Immer noch da")
        frame.get_by_text("Immer noch da").wait_for()
        assert page.get_by_label("Email and language").input_value() == "1:de"
        page.get_by_label("Email and language").select_option("0:de")
        frame.get_by_text("Sie haben etwas vergessen").wait_for()  # the template's German
        shot(page, "email-editor", full_page=True)
        page.get_by_role("button", name="Save the flow").click()
        page.wait_for_url(f"**/admin/sites/{site}/emails?notice=saved")
        flow = stored(r, site).flow("cart")
        assert flow is not None
        assert flow.steps[0].texts == {"en": {"heading": "Your basket misses you"}}
        assert flow.steps[1].texts == {"de": {"heading": "Immer noch da"}}


def test_the_site_s_words_are_edited_per_language_and_shown_in_the_preview(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    words = f"/admin/sites/{site}/emails/words"
    page = editor.get(words)
    assert page.status_code == 200
    fields = {name: values[-1] for name, values in form_fields(page.text, "words-form").items()}
    fields.pop("csrf")
    assert fields["words.de.footer"] == "" and 'placeholder="Sie erhalten diese' in page.text
    too_long = editor.post(words, {**fields, "words.en.reward_heading": "x" * 601})
    assert too_long.status_code == 422
    assert 'id="err-words.en.reward_heading">Use at most 600 characters' in too_long.text
    assert r.get(KEYS.mail_flows(site)) is None
    saved = editor.post(words, {**fields, "words.de.footer": "Gesendet von {shop}.",
                                "words.en.confirm_heading": "One click, please"})  # fmt: skip
    assert saved.status_code == 303
    config = stored(r, site)
    assert config.words == {"de": {"footer": "Gesendet von {shop}."},
                            "en": {"confirm_heading": "One click, please"}}  # fmt: skip
    stale = editor.post(words, {**fields, "words.de.footer": "Alt"})  # the old version
    assert stale.status_code == 409 and "Someone saved the email settings" in stale.text
    draft = editor.post(f"/admin/sites/{site}/emails/cart/draft",
                        {**submitted(editor, site), "preview": "0:de"})  # fmt: skip
    assert "Gesendet von " in draft.text and "Sie erhalten diese" not in draft.text


def test_an_sms_step_shows_its_encoding_and_segments(
    editor: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    form = submitted(editor, site)
    switched = editor.post(page_of(site), {**form, "steps.1.channel": "sms", "action": "channel"})
    fields = form_fields(switched.text, "flow-form")
    assert "steps.1.sms_text.en" in fields and "steps.1.subject.en" not in fields
    assert "SMS 2" in switched.text and r.get(KEYS.mail_flows(site)) is None
    form = {name: values[-1] for name, values in fields.items()}
    form.pop("csrf")
    draft = f"/admin/sites/{site}/emails/cart/draft"
    text = "Your cart at {shop} is waiting: {link}"
    preview = editor.post(draft, {**form, "steps.1.sms_text.en": text, "preview": "1:en"})
    assert preview.status_code == 200 and "/v1/sms/l/" in preview.text
    assert "GSM-7, 1 segment" in preview.text
    too_long = editor.post(page_of(site), {**form, "steps.1.sms_text.en": "ж" * 700,
                                           "action": "save"})  # fmt: skip
    assert too_long.status_code == 422 and "segments (UCS-2)" in too_long.text
    empty = editor.post(page_of(site), {**form, "action": "save"})
    assert empty.status_code == 422 and "Write the SMS in at least one language." in empty.text
    saved = editor.post(page_of(site), {**form, "steps.1.sms_text.en": text,
                                        "steps.1.sms_text.de": "Ihr Warenkorb 🛒 {link}",
                                        "action": "save"})  # fmt: skip
    assert saved.status_code == 303
    flow = stored(r, site).flow("cart")
    assert flow is not None and flow.steps[1].channel == "sms"
    assert flow.steps[1].sms_text == {"en": text, "de": "Ihr Warenkorb 🛒 {link}"}
    assert flow.steps[0].channel == "email"
    page = editor.get(page_of(site)).text
    assert "GSM-7 · 1 segment · 126 of 160" in page  # {shop} as 30, {link} as 70 characters
    assert "UCS-2 · 2 segments · 87 of 134" in page  # the emoji counts two
    overview = editor.get(f"/admin/sites/{site}/emails")
    assert overview.status_code == 200
    assert (
        'an SMS to the visitor\'s confirmed phone, “<span lang="en">Your cart at' in overview.text
    )


@pytest.mark.browser
def test_an_sms_text_s_size_follows_the_typing(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    site = add_site(redis_url)
    with signed_in_page(server, make_user(redis_url, "editor")) as (page, _):
        page.goto(f"{server.url}{page_of(site)}")
        page.locator("#f-steps\\.0\\.channel").select_option("sms")
        page.locator("#step-0").get_by_role("button", name="Show its fields").click()
        area = page.get_by_label("SMS text (en)")
        area.fill("Hi from {shop}")
        size = page.locator("#size-steps\\.0\\.sms_text\\.en")
        assert size.text_content() == "GSM-7 · 1 segment · 38 of 160"
        area.fill("Hi from {shop} 😀")
        assert size.text_content() == "UCS-2 · 1 segment · 41 of 70"
        area.fill("a" * 200)
        assert size.text_content() == "GSM-7 · 2 segments · 200 of 306"
        frame = page.frame_locator("#preview-frame")
        frame.get_by_text("GSM-7, 2 segments").wait_for()  # the server's preview agrees
