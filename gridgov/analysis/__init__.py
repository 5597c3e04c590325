"""The analyst's toolkit: forward searches, isochrones, station siting, workload, travel-time
accuracy, demand profiles and exports of every result (pure, except where a module says)."""
