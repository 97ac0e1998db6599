/* SAEMI: keyboard shortcuts of the editing tools (saemi/ui/editing.py lists them in the page).
 * X exclude, E erase, M merge, A add, S split, Enter merge the selection, Ctrl+Z undo,
 * Ctrl+Y or Ctrl+Shift+Z redo. Keys typed into a field are left alone. */
(function () {
    var TOOLS = {x: "exclude", e: "erase", m: "merge", a: "add", s: "split"};
    function typing(el) {
        if (!el) { return false; }
        var tag = (el.tagName || "").toLowerCase();
        return tag === "input" && el.type !== "radio" && el.type !== "checkbox" || tag === "textarea"
            || tag === "select" || el.isContentEditable;
    }
    function press(id) {
        var button = document.getElementById(id);
        if (button && !button.disabled) { button.click(); return true; }
        return false;
    }
    // Plotly cancels the mousedown on the image view, so a click there leaves the focus where it
    // was: on the last button pressed, which Enter would press again instead of merging.
    document.addEventListener("mousedown", function (ev) {
        var el = document.activeElement;
        if (ev.target.closest && ev.target.closest("#image-graph") && el && el !== document.body
                && !typing(el)) { el.blur(); }
    }, true);
    document.addEventListener("keydown", function (ev) {
        if (typing(document.activeElement) || ev.altKey) { return; }
        var key = (ev.key || "").toLowerCase();
        if (ev.ctrlKey || ev.metaKey) {
            if (key === "z" && !ev.shiftKey) { if (press("edit-undo")) { ev.preventDefault(); } }
            else if (key === "y" || (key === "z" && ev.shiftKey)) { if (press("edit-redo")) { ev.preventDefault(); } }
            return;
        }
        if (key === "enter") {
            if (document.activeElement && document.activeElement.tagName === "BUTTON") { return; }
            if (press("edit-merge")) { ev.preventDefault(); }
            return;
        }
        var tool = TOOLS[key];
        if (!tool || ev.shiftKey) { return; }
        var radio = document.querySelector('#edit-tool input[value="' + tool + '"]');
        if (radio && !radio.checked) { radio.click(); ev.preventDefault(); }
    });
})();
