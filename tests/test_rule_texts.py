"""The rules' shared words (review window, procedure hold, dose range) reach the pages from the rule modules."""

from __future__ import annotations

import re
from pathlib import Path

from flask import render_template_string

from smart_app import create_app
from smart_app.services import RULE_TEXT

TEMPLATES = Path(__file__).resolve().parents[1] / "smart_app" / "web" / "templates"


def test_every_page_renders_the_rule_words_from_the_rule_modules():
    app = create_app({"ALLOWED_ISSUERS": "https://ehr.example/fhir", "TESTING": True})
    with app.test_request_context("/"):
        shown = render_template_string("{{ rule_text.review_window }}|{{ rule_text.hold_days }}|"
                                       "{{ rule_text.dose_range }}")
    assert shown == "8-12 weeks|2-3 days|0.5-4.5 mg"


def test_the_templates_name_only_rule_words_that_exist_so_none_renders_blank():
    used = {name for path in TEMPLATES.glob("*.html")
            for name in re.findall(r"rule_text\.(\w+)", path.read_text(encoding="utf-8"))}
    assert used and used <= set(RULE_TEXT)
