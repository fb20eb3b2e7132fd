// Strava export import: upload with progress, then the server's processing progress,
// polled until the import ends, then its summary.
import { api, uploadForm } from './api.js';
import { $, clear, el, formatBytes, formatDate, percent, say, setProgress } from './dom.js';

const POLL_MS = 1000;
const ACTIVE = new Set(['queued', 'processing']);
const STATUS_WORDS = {
  uploading: 'Uploading',
  queued: 'Queued',
  processing: 'Processing',
  done: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

function listOf(body, key) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body[key])) return body[key];
  if (body && Array.isArray(body.items)) return body.items;
  return [];
}

function count(value) {
  return typeof value === 'number' ? value : 0;
}

function failureReason(job) {
  for (const key of ['error', 'failureReason', 'reason', 'message']) {
    const value = job[key];
    if (typeof value === 'string' && value) return value;
    if (value && typeof value.message === 'string') return value.message;
  }
  return '';
}

function summaryLine(job) {
  const summary = job.summary || {};
  if (job.status === 'done') {
    const runs = count(summary.activitiesImported);
    const media = count(summary.mediaImported);
    return `${runs} run${runs === 1 ? '' : 's'} and ${media} photo${media === 1 ? '' : 's'} or video${media === 1 ? '' : 's'} imported`;
  }
  if (job.status === 'failed') return failureReason(job) || 'The import did not complete.';
  if (job.status === 'processing') {
    const progress = job.progress || {};
    return `${count(progress.entriesDone)} of ${count(progress.entriesTotal)} entries processed`;
  }
  return '';
}

export function initImports(app) {
  const form = $('import-form');
  const input = $('import-input');
  const submit = $('import-submit');
  const formError = $('import-error');
  const panel = $('import-current');
  const nameNode = $('import-current-name');
  const uploadBar = $('import-upload-progress');
  const uploadText = $('import-upload-text');
  const processBar = $('import-process-progress');
  const processText = $('import-process-text');
  const statusNode = $('import-status');
  const summaryNode = $('import-summary');
  const history = $('import-history');
  const historyEmpty = $('import-history-empty');
  const historyError = $('import-history-error');

  let pollTimer = null;
  let watching = null;
  let lastStatus = '';
  let uploading = false;

  function stopPolling() {
    if (pollTimer) window.clearTimeout(pollTimer);
    pollTimer = null;
    watching = null;
  }

  function setStatus(text) {
    if (statusNode.textContent !== text) statusNode.textContent = text;
  }

  function renderSummary(job) {
    const summary = job.summary || {};
    const skipped = summary.skipped || {};
    const rows = [
      ['Activities found', summary.activitiesFound],
      ['Runs imported', summary.activitiesImported],
      ['Photos and videos imported', summary.mediaImported],
      ['Skipped: not a run', skipped.notRun],
      ['Skipped: already imported', skipped.duplicate],
      ['Skipped: file missing from the archive', skipped.missingFile],
      ['Skipped: invalid', skipped.invalid],
    ];
    const list = el('dl', { className: 'summary' });
    for (const [label, value] of rows) {
      list.append(el('div', {}, el('dt', { text: label }), el('dd', { text: String(count(value)) })));
    }
    const parts = [el('h3', { text: 'Summary' })];
    const reason = job.status === 'failed' ? failureReason(job) : '';
    if (reason) parts.push(el('p', { className: 'error', text: reason }));
    parts.push(list);
    const errors = Array.isArray(summary.errors) ? summary.errors : [];
    if (errors.length) {
      const items = errors.map((problem) => el('li', {},
        el('span', { className: 'filename', text: problem.entry || '' }),
        el('span', { text: problem.entry ? ` — ${problem.message || problem.code || ''}` : (problem.message || problem.code || '') })));
      parts.push(el('h4', { text: `Problems (${errors.length + count(summary.errorsOmitted ?? summary.moreErrors)})` }),
        el('ul', { className: 'problems' }, ...items));
      const more = count(summary.errorsOmitted ?? summary.moreErrors);
      if (more) parts.push(el('p', { className: 'muted', text: `and ${more} more not listed.` }));
    }
    summaryNode.replaceChildren(...parts);
    summaryNode.hidden = false;
  }

  function renderJob(job) {
    const progress = job.progress || {};
    const total = count(progress.entriesTotal);
    const done = count(progress.entriesDone);
    const word = STATUS_WORDS[job.status] || job.status;
    panel.dataset.status = job.status;
    if (job.status === 'queued') {
      processBar.removeAttribute('value');
      processText.textContent = 'Queued';
      setStatus('Uploaded. Waiting for processing to start…');
    } else if (job.status === 'processing') {
      setProgress(processBar, done, total);
      processText.textContent = total ? `${percent(done, total)}%` : 'Starting';
      setStatus(total ? `Processing: ${done} of ${total} entries.` : 'Processing…');
    } else {
      if (job.status === 'done') setProgress(processBar, 1, 1);
      processText.textContent = word;
      setStatus(job.status === 'done' ? 'Import finished.' : `Import ${word.toLowerCase()}. ${failureReason(job)}`.trim());
    }
    if (!ACTIVE.has(job.status)) renderSummary(job);
    else summaryNode.hidden = true;
    lastStatus = job.status;
  }

  async function poll(id) {
    pollTimer = null;
    if (watching !== id) return;
    try {
      const job = await api(`/api/imports/${encodeURIComponent(id)}`);
      if (watching !== id) return;
      renderJob(job);
      if (ACTIVE.has(job.status)) {
        pollTimer = window.setTimeout(() => poll(id), POLL_MS);
      } else {
        stopPolling();
        submit.disabled = false;
        refreshHistory();
        if (job.status === 'done') app.galleryChanged();
        app.announce(`Import ${STATUS_WORDS[job.status].toLowerCase()}.`);
      }
    } catch (failure) {
      if (failure.status === 401) {
        stopPolling();
        return;
      }
      setStatus(`Could not read the import's progress: ${failure.message} Trying again…`);
      pollTimer = window.setTimeout(() => poll(id), POLL_MS * 3);
    }
  }

  function watch(job, label) {
    stopPolling();
    panel.hidden = false;
    nameNode.textContent = label;
    setProgress(uploadBar, 100, 100);
    uploadText.textContent = '100%';
    summaryNode.hidden = true;
    renderJob(job);
    if (ACTIVE.has(job.status)) {
      watching = job.id;
      pollTimer = window.setTimeout(() => poll(job.id), ACTIVE.has(job.status) ? 250 : 0);
    }
  }

  function historyItem(job) {
    const word = STATUS_WORDS[job.status] || job.status;
    const badge = el('span', { className: `badge status-${job.status}`, text: word });
    const line = summaryLine(job);
    const details = el('button', {
      text: 'Details', attrs: { type: 'button', 'aria-label': `Details of the import started ${formatDate(job.createdAt)}` },
    });
    details.addEventListener('click', () => {
      watch(job, `Started ${formatDate(job.createdAt)}`);
      panel.scrollIntoView({ block: 'nearest' });
      $('import-current-title').focus();
    });
    return el('li', { attrs: { 'data-import-id': job.id } },
      el('div', {}, badge, el('span', { text: ` ${formatDate(job.createdAt)}` }),
        line ? el('p', { className: 'muted', text: line }) : null),
      details);
  }

  async function refreshHistory() {
    try {
      const jobs = listOf(await api('/api/imports'), 'imports');
      say(historyError, '');
      clear(history);
      for (const job of jobs) history.append(historyItem(job));
      historyEmpty.hidden = jobs.length > 0;
      const running = jobs.find((job) => ACTIVE.has(job.status));
      if (running && !watching && !uploading) watch(running, `Started ${formatDate(running.createdAt)}`);
    } catch (failure) {
      if (failure.status !== 401) say(historyError, failure.message);
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    say(formError, '');
    const file = input.files && input.files[0];
    if (!file) {
      say(formError, 'Choose the ZIP file of your Strava export first.');
      input.focus();
      return;
    }
    stopPolling();
    uploading = true;
    submit.disabled = true;
    panel.hidden = false;
    panel.dataset.status = 'uploading';
    nameNode.textContent = `${file.name} (${formatBytes(file.size)})`;
    setProgress(uploadBar, 0, 100);
    uploadText.textContent = '0%';
    processBar.value = 0;
    processText.textContent = 'Waiting for the upload';
    summaryNode.hidden = true;
    setStatus('Uploading the archive…');
    const data = new FormData();
    data.append('file', file, file.name);
    let job;
    try {
      job = await uploadForm('/api/imports', data, (done, total) => {
        const value = percent(done, total);
        uploadBar.value = value;
        uploadText.textContent = `${value}%`;
      });
    } catch (failure) {
      uploading = false;
      submit.disabled = false;
      panel.dataset.status = 'failed';
      setStatus('The archive was not accepted.');
      say(formError, failure.message);
      return;
    }
    uploading = false;
    form.reset();
    watch({ status: 'queued', ...job }, `${file.name} (${formatBytes(file.size)})`);
    refreshHistory();
  });

  return {
    enter() {
      refreshHistory();
    },
    reset() {
      stopPolling();
      uploading = false;
      submit.disabled = false;
      panel.hidden = true;
      summaryNode.hidden = true;
      clear(history);
      say(formError, '');
      say(historyError, '');
      lastStatus = '';
    },
    get lastStatus() {
      return lastStatus;
    },
  };
}
