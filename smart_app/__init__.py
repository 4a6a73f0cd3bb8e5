"""Low-dose naltrexone (LDN) decision support: a SMART on FHIR R4 app."""
