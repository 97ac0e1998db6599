/* SAEMI: show the page's panels once their components have drawn, not empty first and then jumping.
 * Dash loads the graph, slider, dropdown and table components in chunks after the page; until they
 * are drawn the panels have no height, and everything below moves when they arrive. The panels stay
 * hidden (laid out, so nothing moves later) until every graph, dropdown, slider and the table are there,
 * or 6 s have passed. */
(function () {
    var start = Date.now();
    function drawn() {
        var main = document.querySelector('.app-main');
        if (!main) { return false; }
        var graphs = main.querySelectorAll('.dash-graph').length;
        return graphs > 0 && main.querySelectorAll('.js-plotly-plot .main-svg').length >= graphs &&
            main.querySelectorAll('.ag-root-wrapper').length > 0 &&
            !main.querySelector('.dash-graph--pending, [data-dash-is-loading="true"]');
    }
    function check() {
        if (drawn() || Date.now() - start > 6000) {
            // two frames: let the last components lay out before they are shown
            requestAnimationFrame(function () { requestAnimationFrame(function () {
                document.body.classList.add('saemi-ready');
            }); });
            return;
        }
        setTimeout(check, 50);
    }
    check();
})();
