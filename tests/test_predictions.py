"""The predictions table -> metrics path (medvlm.predictions): exact values by hand."""
