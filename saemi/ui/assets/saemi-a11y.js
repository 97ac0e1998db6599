/* SAEMI: give the slider handles (and their number boxes) the name of their <label>.
 * dcc.Slider renders its own thumb (role="slider") without a name; the page's labels are
 * <label id="<slider id>-label">. Runs again whenever Dash re-renders. */
(function () {
    function name() {
        var sliders = document.querySelectorAll('.dash-slider-container[id]');
        for (var i = 0; i < sliders.length; i++) {
            var labelId = sliders[i].id + '-label';
            if (!document.getElementById(labelId)) { continue; }
            var parts = sliders[i].querySelectorAll('[role="slider"], input');
            for (var j = 0; j < parts.length; j++) {
                if (parts[j].getAttribute('aria-labelledby') !== labelId) {
                    parts[j].setAttribute('aria-labelledby', labelId);
                }
            }
        }
    }
    var pending = false;
    new MutationObserver(function () {
        if (pending) { return; }
        pending = true;
        window.requestAnimationFrame(function () { pending = false; name(); });
    }).observe(document.documentElement, {childList: true, subtree: true});
    document.addEventListener('DOMContentLoaded', name);
})();
