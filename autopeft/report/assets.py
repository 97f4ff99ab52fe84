"""Static parts of the HTML report: the stylesheet and the JavaScript error recorder.

The recorder stores every JavaScript error and ``console.error`` in the ``data-js-errors``
attribute of ``<html>``, so a headless browser (the report test) can assert there were none.
"""

ERRORS_JS = """(function () {
  var errors = [];
  function record(msg) {
    errors.push(String(msg));
    document.documentElement.setAttribute("data-js-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (e) { record(e.message || "error"); });
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection: " + ((e.reason && e.reason.message) || e.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
})();"""
CSS = """
body { font-family: system-ui, "DejaVu Sans", Arial, sans-serif; margin: 24px 32px;
       color: #222; background: #fafafa; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-bottom: 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.autopeft-plot { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #e0e0e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.front td:first-child { border-left: 4px solid #d62728; }
.status { padding: 1px 6px; border-radius: 3px; color: #fff; font-size: 12px; }
.err { color: #b00; max-width: 420px; } .desc { max-width: 520px; font-family: monospace; }
pre { background: #fff; border: 1px solid #e3e3e3; padding: 12px; font-size: 12px; }
.scroll { max-height: 640px; overflow: auto; display: inline-block; }
"""
