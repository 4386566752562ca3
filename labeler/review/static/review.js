// The review page: one page of rows at a time from /api/rows, decisions POSTed to
// /api/label. Every piece of row data is written with textContent, never as HTML.
"use strict";
(() => {
  const token = document.querySelector('meta[name="labeler-token"]').content;
  if (location.search) history.replaceState(null, "", location.pathname);  // token off the bar
  const PAGE = 50;
  const st = { labels: [], rows: [], offset: 0, matched: 0, sel: 0, undo: [], loads: 0 };
  const $ = (id) => document.getElementById(id);

  async function api(path, body) {
    const opts = { headers: { "X-Labeler-Token": token } };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || String(resp.status));
    return data;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function query() {
    const p = new URLSearchParams({ offset: st.offset, limit: PAGE, status: $("f-status").value });
    if ($("f-label").value) p.set("label", $("f-label").value);
    if ($("f-min").value !== "") p.set("min", $("f-min").value);
    if ($("f-max").value !== "") p.set("max", $("f-max").value);
    if ($("f-text").value.trim()) p.set("q", $("f-text").value.trim());
    return p.toString();
  }

  function say(text) { $("status").textContent = text; }

  function progress(reviewed, total) {
    $("progress").textContent = `${reviewed} of ${total} reviewed`;
  }

  // The labels come once; the first page of rows is fetched alongside, not after them.
  const ready = api("/api/meta").then((meta) => {
    st.labels = meta.labels;
    $("task").textContent = `${meta.task} · ${meta.teacher} · ${meta.reviewer}`;
    for (const label of [...meta.labels, "(invalid)"]) {
      const o = el("option", "", label);
      o.value = label;
      $("f-label").append(o);
    }
  });

  async function load(sel) {
    try {
      const [data] = await Promise.all([api("/api/rows?" + query()), ready]);
      st.rows = data.rows;
      st.matched = data.matched;
      st.sel = Math.max(0, Math.min(sel || 0, st.rows.length - 1));
      render();
      progress(data.reviewed, data.total);
    } catch (err) {
      say("cannot load rows: " + err.message);
    }
    const n = ++st.loads;  // tests and benchmarks wait on these
    document.body.dataset.loads = String(n);
    requestAnimationFrame(() => {
      document.body.dataset.paintedAt = String(performance.now());
      document.body.dataset.painted = String(n);
    });
  }

  function render() {
    const rows = st.rows.map((row, i) => renderRow(row, i));
    $("rows").replaceChildren(...rows);
    if (!rows.length) $("rows").append(el("p", "empty", "No rows match these filters."));
    const first = st.rows.length ? st.offset + 1 : 0;
    $("pageinfo").textContent = `rows ${first}–${st.offset + st.rows.length} of ${st.matched}`;
    $("prev").disabled = st.offset === 0;
    $("next").disabled = st.offset + PAGE >= st.matched;
    select(st.sel);
  }

  function renderRow(row, i) {
    const art = el("article", "row");
    art.dataset.key = row.key;
    art.dataset.index = String(i);
    if (row.human) art.classList.add("reviewed");
    if (row.queued) art.classList.add("queued");
    if (row.disagree) art.classList.add("disagree");
    const head = el("div", "head");
    head.append(el("span", "rowid", row.id), el("span", "conf", `confidence ${row.confidence.toFixed(2)}`));
    if (row.samples) {  // a generation row: its answers and their verdicts
      const passed = row.samples.filter((s) => s.status === "pass").length;
      head.append(el("span", "teacher", `${passed} of ${row.samples.length} answers pass`));
      head.append(el("span", "human", row.pick === null ? "" : `picked: answer ${row.pick + 1}`));
    } else {
      head.append(el("span", "teacher", "teacher: " + (row.label === null ? "(invalid)" : row.label)));
      head.append(el("span", "human", row.human ? "human: " + row.human : ""));
    }
    if (row.queued) head.append(el("span", "queued", "queued by the cascade"));
    if (row.disagree) head.append(el("span", "split", "teachers disagree"));
    art.append(head);
    if (row.votes) {  // an ensemble's members or a cascade's stages: who said what
      const votes = el("div", "votes");
      for (const v of row.votes) {
        const span = el("span", "vote", `${v.by} ${v.teacher}: ${v.label === null ? "(invalid)" : v.label}`);
        if (v.label !== row.label) span.classList.add("differs");
        votes.append(span);
      }
      art.append(votes);
    }
    for (const [name, value] of Object.entries(row.fields)) {
      const f = el("div", "field");
      if (Object.keys(row.fields).length > 1) f.append(el("span", "fname", name));
      f.append(el("span", "text", value));
      art.append(f);
    }
    if (row.samples) {
      art.append(renderSamples(row, i));
      art.addEventListener("click", () => select(i));
      return art;
    }
    const bars = el("div", "bars");
    st.labels.forEach((label, j) => {
      const p = row.probs ? row.probs[j] : 0;
      const b = el("button", "bar");
      b.type = "button";
      b.dataset.label = label;
      if (label === row.label) b.classList.add("is-teacher");
      if (label === row.human) b.classList.add("is-human");
      const fill = el("span", "fill");
      fill.style.width = `${Math.round(p * 100)}%`;
      b.append(fill, el("span", "num", j < 9 ? String(j + 1) : ""), el("span", "lname", label),
        el("span", "prob", p.toFixed(2)));
      b.addEventListener("click", (ev) => { ev.stopPropagation(); decide(i, label); });
      bars.append(b);
    });
    art.append(bars);
    art.addEventListener("click", () => select(i));
    return art;
  }

  function renderSamples(row, i) {
    const list = el("div", "samples");
    for (const s of row.samples) {
      const b = el("button", "sample");
      b.type = "button";
      b.dataset.sample = String(s.sample);
      if (s.status) b.classList.add("is-" + s.status);
      if (s.kept) b.classList.add("is-kept");
      if (s.sample === row.pick) b.classList.add("is-human");
      const verdict = s.status === null ? "not checked"
        : s.status + (s.score === null ? "" : ` ${s.score.toFixed(2)}`);
      const meta = el("span", "verdict", `${s.sample < 9 ? s.sample + 1 : ""} ${verdict}`);
      if (s.detail) meta.title = s.detail;
      b.append(meta, el("span", "answer", s.text));
      b.addEventListener("click", (ev) => { ev.stopPropagation(); pick(i, s.sample); });
      list.append(b);
    }
    return list;
  }

  async function pick(i, sample) {
    const row = st.rows[i];
    if (!row || !row.samples || sample >= row.samples.length) return;
    try {
      const res = await api("/api/pick", { key: row.key, sample });
      st.undo.push({ key: row.key, previous: res.previous, pick: true });
      setPick(row.key, res.pick);
      progress(res.reviewed, res.total);
      say(`${row.id}: answer ${sample + 1}`);
      if (i === st.sel) move(1);
    } catch (err) {
      say("not saved: " + err.message);
    }
  }

  function setPick(key, sample) {
    const i = st.rows.findIndex((r) => r.key === key);
    if (i < 0) return;
    st.rows[i].pick = sample;
    st.rows[i].human = sample === null ? null : st.rows[i].samples[sample].text;
    const node = $("rows").querySelector(`article.row[data-index="${i}"]`);
    if (node) node.replaceWith(renderRow(st.rows[i], i));
    select(st.sel);
  }

  function select(i) {
    const nodes = $("rows").querySelectorAll("article.row");
    if (!nodes.length) return;
    st.sel = Math.max(0, Math.min(i, nodes.length - 1));
    nodes.forEach((n, j) => n.classList.toggle("selected", j === st.sel));
    nodes[st.sel].scrollIntoView({ block: "nearest" });
  }

  function setHuman(key, label) {
    const i = st.rows.findIndex((r) => r.key === key);
    if (i < 0) return;
    st.rows[i].human = label;
    const node = $("rows").querySelector(`article.row[data-index="${i}"]`);
    if (node) node.replaceWith(renderRow(st.rows[i], i));
    select(st.sel);
  }

  async function decide(i, label) {
    const row = st.rows[i];
    if (!row || !label) return;
    try {
      const res = await api("/api/label", { key: row.key, label });
      st.undo.push({ key: row.key, previous: res.previous });
      setHuman(row.key, label);
      progress(res.reviewed, res.total);
      say(`${row.id}: ${label}`);
      if (i === st.sel) move(1);
    } catch (err) {
      say("not saved: " + err.message);
    }
  }

  async function undo() {
    const last = st.undo.pop();
    if (!last) { say("nothing to undo"); return; }
    try {
      const res = last.pick
        ? await api("/api/pick", { key: last.key, sample: last.previous })
        : await api("/api/label", { key: last.key, label: last.previous });
      if (last.pick) setPick(last.key, last.previous); else setHuman(last.key, last.previous);
      const i = st.rows.findIndex((r) => r.key === last.key);
      if (i >= 0) select(i);
      progress(res.reviewed, res.total);
      say("undone");
    } catch (err) {
      st.undo.push(last);
      say("undo failed: " + err.message);
    }
  }

  function move(step) {
    const next = st.sel + step;
    if (next >= st.rows.length && st.offset + PAGE < st.matched) return page(1, 0);
    if (next < 0 && st.offset > 0) return page(-1, PAGE - 1);
    select(next);
  }

  function page(step, sel) {
    const offset = st.offset + step * PAGE;
    if (offset < 0 || offset >= st.matched) return;
    st.offset = offset;
    load(sel);
  }

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const row = st.rows[st.sel];
    if (ev.key === "Enter") { if (row && !row.samples) decide(st.sel, row.label); }
    else if (/^[1-9]$/.test(ev.key) && row && row.samples) { pick(st.sel, Number(ev.key) - 1); }
    else if (/^[1-9]$/.test(ev.key)) { decide(st.sel, st.labels[Number(ev.key) - 1]); }
    else if (ev.key === "ArrowDown") move(1);
    else if (ev.key === "ArrowUp") move(-1);
    else if (ev.key === "ArrowRight") page(1, 0);
    else if (ev.key === "ArrowLeft") page(-1, 0);
    else if (ev.key === "u") undo();
    else return;
    ev.preventDefault();
  });

  let typing = null;
  const refilter = () => { st.offset = 0; load(0); };
  for (const id of ["f-label", "f-min", "f-max", "f-status"]) $(id).addEventListener("change", refilter);
  $("f-text").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refilter, 200); });
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); refilter(); });
  $("prev").addEventListener("click", () => page(-1, 0));
  $("next").addEventListener("click", () => page(1, 0));

  load(0);
})();
