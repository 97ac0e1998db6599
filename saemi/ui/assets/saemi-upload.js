/* SAEMI: refuse files over the server's upload limit in the browser, with a readable message.
 * Without this a too-large file would be cut off by the server's request limit and the user would
 * see nothing. The limit comes from <div id="upload-limit" data-max-bytes="...">. */
(function () {
    function limitBytes() {
        var el = document.getElementById('upload-limit');
        var v = el ? Number(el.getAttribute('data-max-bytes')) : 0;
        return v > 0 ? v : 0;
    }
    function tooLarge(files) {
        var max = limitBytes();
        if (!max || !files) { return null; }
        for (var i = 0; i < files.length; i++) {
            if (files[i].size > max) { return files[i]; }
        }
        return null;
    }
    function mb(n) { return (n / 1048576).toFixed(n < 10485760 ? 1 : 0); }
    function refuse(file, event) {
        event.preventDefault();
        event.stopPropagation();
        var box = document.getElementById('upload-error');
        if (box) {
            box.textContent = 'Could not analyse ' + file.name + ': the file is ' + mb(file.size) +
                ' MB; the limit is ' + mb(limitBytes()) + ' MB.';
        }
    }
    function inUpload(node) {
        var up = document.getElementById('upload');
        return up && node && up.contains(node);
    }
    document.addEventListener('change', function (e) {
        if (!inUpload(e.target)) { return; }
        var f = tooLarge(e.target.files);
        if (f) { refuse(f, e); e.target.value = ''; }
    }, true);
    document.addEventListener('drop', function (e) {
        if (!inUpload(e.target)) { return; }
        var f = tooLarge(e.dataTransfer && e.dataTransfer.files);
        if (f) { refuse(f, e); }
    }, true);
})();
