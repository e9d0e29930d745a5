"""The HTML report: figures (:mod:`medvlm.report.figures`) and the page (:mod:`medvlm.report.html`)."""
