"""The sandbox EHR's order buttons call the app's CDS Hooks live: signed JWT, no prefetch, reads through its proxy."""

from __future__ import annotations

import re

import pytest
import requests

pytestmark = pytest.mark.live


def order(sandbox, patient: str, drug: str) -> str:
    response = requests.post(f"{sandbox.ehr_url}/cds/order", data={"patient": patient, "drug": drug}, timeout=60)
    assert response.status_code == 200, response.text
    return response.text


def indicators(page: str) -> list[str]:
    return re.findall(r'data-indicator="(\w+)"', page)


def test_the_patient_list_offers_order_ldn_and_order_oxycodone_for_each_patient(sandbox):
    page = requests.get(f"{sandbox.ehr_url}/", timeout=30).text
    assert page.count(">Order LDN<") == page.count(">EHR launch<") > 0
    assert page.count(">Order oxycodone<") == page.count(">EHR launch<")


def test_ordering_ldn_for_a_patient_on_oxycodone_shows_critical_cards_from_both_hooks(sandbox):
    page = order(sandbox, "ldn-oxycodone-active", "ldn")
    assert indicators(page) == ["critical", "critical"]
    assert "order-select" in page and "order-sign" in page
    assert "oxycodone" in page.lower() and "Remove the draft order" in page


def test_ordering_ldn_for_an_eligible_patient_shows_info_cards_with_a_button_that_launches_the_app(sandbox):
    page = order(sandbox, "ldn-fibromyalgia", "ldn")
    assert indicators(page) == ["info", "info"]
    assert 'action="/launch"' in page and "Open the LDN app" in page


def test_ordering_oxycodone_for_a_patient_on_naltrexone_warns_to_hold_it(sandbox):
    page = order(sandbox, "ldn-naltrexone-50", "oxycodone")
    assert indicators(page) == ["warning", "warning"]
    assert "blocks" in page and "Hold LDN 2-3 days" in page


def test_ordering_oxycodone_for_a_patient_not_on_naltrexone_shows_no_card(sandbox):
    page = order(sandbox, "ldn-fibromyalgia", "oxycodone")
    assert indicators(page) == [] and page.count("No card: nothing applies") == 2
