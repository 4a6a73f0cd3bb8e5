"""CDS Hooks 2.0 services (order-select, order-sign) that run the app's LDN rules inside the EHR's order entry."""
