(function(){
var lang={{ lang|tojson }}, screen='scan', job='', busy=false, down=false, shownKey=null, thumbUrl=null,
  inflight=0;
var msg=document.getElementById('msg');
var token=document.querySelector('meta[name="postedge-token"]').getAttribute('content');
function $(s){return document.querySelector(s);}
/* Good, duplicate and bad each sound and feel different, so the courier need not look:
   one short high beep, two short middle beeps, one long low buzz (Web Audio, no sound
   files), and the matching vibration patterns. A browser without either stays quiet. */
var CUES={good:{tones:[[1760,0,0.08]],vib:[60]},
  duplicate:{tones:[[880,0,0.07],[880,0.13,0.07]],vib:[40,80,40]},
  bad:{tones:[[196,0,0.4]],vib:[250,100,250]}};
var actx=null;
function cue(kind){
  var c=CUES[kind]; msg.setAttribute('data-cue',kind);
  try{
    var AC=window.AudioContext||window.webkitAudioContext;
    if(AC){actx=actx||new AC(); if(actx.state==='suspended'){actx.resume();}
      var t0=actx.currentTime;
      c.tones.forEach(function(s){var o=actx.createOscillator(),g=actx.createGain();
        o.type=kind==='bad'?'sawtooth':'square'; o.frequency.value=s[0];
        g.gain.setValueAtTime(0.15,t0+s[1]); g.gain.setValueAtTime(0,t0+s[1]+s[2]);
        o.connect(g); g.connect(actx.destination); o.start(t0+s[1]); o.stop(t0+s[1]+s[2]+0.01);});}
  }catch(e){}
  try{if(navigator.vibrate){navigator.vibrate(c.vib);}}catch(e){}
}
/* The one result area (#msg, right under the scan input on every screen): every scan and
   every action replaces what it said, with a thumbnail after a photo. */
function show(r,thumb){
  var v=r.verdict||(r.ok?'good':'refused');
  msg.className='fb v-'+v; msg.setAttribute('data-verdict',v); msg.setAttribute('data-ok',r.ok?'1':'0');
  msg.textContent='';
  if(thumbUrl&&thumbUrl!==thumb&&thumbUrl.indexOf('blob:')===0){URL.revokeObjectURL(thumbUrl);}
  thumbUrl=thumb||null;
  if(thumb){var im=document.createElement('img'); im.className='thumb'; im.id='thumb'; im.alt='';
    im.src=thumb; im.onerror=function(){im.hidden=true;}; msg.appendChild(im);}
  var body=document.createElement('span'); body.className='body';
  var b=document.createElement('b'); b.className='text';
  b.textContent=r[lang]||r.en||(r.ok?msg.getAttribute('data-done'):r.code)||'';
  body.appendChild(b);
  if(r.text){var m=document.createElement('span'); m.className='mono'; m.textContent=r.text; body.appendChild(m);}
  msg.appendChild(body);
  cue(v==='duplicate'?'duplicate':(r.ok?'good':'bad'));
}
function pending(){
  msg.className='fb v-pending'; msg.setAttribute('data-verdict','pending'); msg.removeAttribute('data-ok');
  msg.textContent=msg.getAttribute('data-pending');
}
/* The app stops answering (its process died, the terminal is restarting it): a red
   banner, the pill says so, and every action is off until the next answer, so nothing
   looks done that was not. Scans from the engine's keyboard wait in the page's queue. */
function setDown(d){
  if(d===down)return; down=d;
  $('#down').hidden=!d; document.body.toggleAttribute('data-stale',d);
  var pill=$('#link-pill');
  if(d&&pill){pill.className='pill off'; pill.setAttribute('data-connected','0');
    pill.textContent=pill.getAttribute('data-down');}
  if(d){document.querySelectorAll('main button,main input,#scan-form button,#torch').forEach(function(x){
      if(!x.disabled){x.disabled=true;x.setAttribute('data-off','1');}});}
  else{document.querySelectorAll('[data-off]').forEach(function(x){x.disabled=false;x.removeAttribute('data-off');});
    $('#status').removeAttribute('data-html');}
}
function timed(url,opt,ms){
  var ac=window.AbortController?new AbortController():null, tm=null;
  if(ac){opt.signal=ac.signal; tm=setTimeout(function(){ac.abort();},ms);}
  return fetch(url,opt).finally(function(){if(tm)clearTimeout(tm);});
}
function post(url,body,raw,thumb){
  var opt={method:'POST',credentials:'same-origin',headers:{'X-Postedge-Token':token}};
  if(raw!==undefined&&raw!==null){opt.body=raw;opt.headers['Content-Type']='application/octet-stream';}
  else{opt.body=JSON.stringify(body||{});opt.headers['Content-Type']='application/json';}
  inflight++;
  return timed(url,opt,60000).then(function(r){return r.json();})
   .then(function(r){
     inflight--; setDown(false);
     if(r.code==='bad_token'){reloadOnce();}
     if(r.result_key!==undefined){shownKey=r.result_key;}
     show(r,thumb); return refresh().then(function(){return r;});})
   .catch(function(e){if(inflight>0){inflight--;} setDown(true);
     var d=$('#down').textContent; show({ok:false,zh:d,en:d},thumb);});
}
/* A page the service worker kept from an earlier run of the app carries that run's
   session token: the first refusal for it loads the page afresh. */
function reloadOnce(){
  var last=+(sessionStorage.getItem('pe-reload')||0);
  if(Date.now()-last>10000){sessionStorage.setItem('pe-reload',String(Date.now())); location.reload();}
}
function load(name,el){
  var q='/part?name='+name+'&lang='+lang+(name==='jobs'?'&job='+encodeURIComponent(job):'');
  return timed(q,{cache:'no-store'},5000).then(function(r){if(!r.ok)throw new Error(r.status);return r.text();})
   .then(function(h){setDown(false);
     if(el.getAttribute('data-html')!==h){el.innerHTML=h;el.setAttribute('data-html',h);}
     if(name==='status'){lastResult();}
     if(name==='scan'){signRestore();keypadRestore();}
     if(name==='dispatch'){formError();}
     return true;})
   .catch(function(){setDown(true);return false;});
}
/* The newest result the app holds (the status part's #last-result): shown when its key
   is new, i.e. a scan that did not come through this page's field (the serial engine,
   the camera), or a deposit's locker answer ("9 号格口已开"). */
function lastResult(){
  var e=$('#last-result'); if(!e||inflight)return;  /* a request's own answer says it */
  var k=e.getAttribute('data-key');
  if(shownKey===null){shownKey=k;}  /* the page shows what it found at load without a sound */
  if(k===shownKey)return;
  shownKey=k;
  show({verdict:e.getAttribute('data-verdict'),ok:e.getAttribute('data-ok')==='1',
        zh:e.textContent,en:e.textContent,text:e.getAttribute('data-text')});
}
var handoutErr=null;
function formError(){
  if(!handoutErr)return;
  var f=document.querySelector('form.handout[data-group="'+handoutErr.g+'"][data-share="'+handoutErr.s+'"]');
  if(!f||f.querySelector('.form-error'))return;
  var p=document.createElement('p'); p.className='form-error'; p.setAttribute('role','alert');
  p.textContent=handoutErr.text; f.insertBefore(p,f.firstChild);
}
function refresh(){
  var p=[load('status',$('#status'))];
  var live=$('#scr-'+screen+' .live'); if(live){p.push(load(screen,live));}
  if(screen==='camera'&&!down){$('#preview').src='/camera.jpg?t='+Date.now();}
  return Promise.all(p).then(drain);
}
/* Keyboard-emulation (wedge) scans: handheld/wedge.py says why these rules. Keys with
   pauses of at most wc.brk ms form a burst; a burst ended by Enter/Tab is a scan when it
   has at least wc.min characters (besides the prefix/suffix), its keys and the Enter/Tab
   came wc.gap ms apart on average, and it carries the configured prefix/suffix. Its keys
   went into the focused field as they came: that field gets its old value back, and the
   code is posted to /api/wedge, or, while a dialog is open, queued (kept in
   localStorage) and posted when it closes. A field marked data-wedge="field" (the
   delivery token) keeps the code instead. Times are the events' own (e.timeStamp). */
var wc=JSON.parse(document.querySelector('meta[name="postedge-wedge"]').getAttribute('content'));
var burst=null, wq=[], draining=false;
try{wq=JSON.parse(localStorage.getItem('pe-wedge-q')||'[]');}catch(e){wq=[];}
function editable(el){return !!el&&(el.tagName==='TEXTAREA'||(el.tagName==='INPUT'&&el.type!=='file'));}
function dialogOpen(){return !!document.querySelector('dialog[open],[role=dialog]');}
function saveQ(){try{localStorage.setItem('pe-wedge-q',JSON.stringify(wq));}catch(e){}}
function showQ(){var q=$('#wedge-queue'); q.hidden=!wq.length; q.setAttribute('data-count',wq.length);
  q.textContent=q.getAttribute('data-text').replace('{n}',wq.length);}
function drain(){
  showQ();
  if(down||draining||!wq.length||dialogOpen())return;
  draining=true; var s=wq[0];
  post('/api/wedge',{raw:s.raw,age_ms:Math.max(0,Date.now()-s.t)}).then(function(r){
    draining=false;
    if(r){wq.shift();saveQ();}  /* judged (whatever the verdict); a network error keeps it */
    showQ(); if(r){drain();}
  });
}
function affixed(x){return x.length>=wc.min+wc.prefix.length+wc.suffix.length&&
  x.slice(0,wc.prefix.length)===wc.prefix&&x.slice(x.length-wc.suffix.length)===wc.suffix;}
window.addEventListener('keydown',function(e){
  if(e.isComposing||e.ctrlKey||e.altKey||e.metaKey)return;
  var now=e.timeStamp, k=e.key, on=!!burst&&now-burst.last<=wc.brk;
  if(k==='Enter'||k==='Tab'){
    var b=burst; burst=null;
    /* typing: the key does what it always does */
    if(!on||!affixed(b.text)||(now-b.t0)/b.text.length>wc.gap)return;
    e.preventDefault(); e.stopPropagation();
    var code=b.text.slice(wc.prefix.length,b.text.length-wc.suffix.length);
    if(editable(b.el)&&b.before!==null){
      var wm=b.el.getAttribute('data-wedge');
      b.el.value=wm==='field'?b.before+code:b.before;
      if(wm==='field')return;
      /* a field of its own (the village point's handover list): the code is its entry */
      if(wm==='submit'&&b.el.form){b.el.value=code; b.el.form.requestSubmit(); return;}
    }
    wq.push({raw:b.text,t:Date.now()}); saveQ(); drain();
    return;
  }
  if(k==='Shift')return;  /* engines type capitals with Shift held */
  if(k.length!==1){burst=null;return;}
  if(!on){var a=document.activeElement;
    burst={text:'',el:a,before:editable(a)?a.value:null,t0:now};}
  burst.text+=k; burst.last=now;
},true);
function go(s){
  screen=s; if(s!=='jobs'&&!camScan){camStop();}
  document.querySelectorAll('main > section').forEach(function(x){x.hidden=(x.id!=='scr-'+s);});
  document.querySelectorAll('nav .btn').forEach(function(b){b.setAttribute('aria-current',
    b.getAttribute('data-screen')===s?'true':'false');});
  refresh();
}
/* The browser's camera (getUserMedia, the rear camera preferred) for evidence photos: a
   frame drawn to a canvas, sent as a JPEG to the same photo route as a chosen file, so
   the server's quality gate, hashing and duplicate rules decide. Torch where the
   camera has one. Stopped when the courier leaves the jobs screen. */
var cam=null;
function camStop(){if(cam){cam.getTracks().forEach(function(t){t.stop();});cam=null;}
  var v=$('#bcam'); v.srcObject=null; v.hidden=true; $('#torch').hidden=true;}
function camOpen(){
  if(cam)return Promise.resolve(cam);
  if(!navigator.mediaDevices||!navigator.mediaDevices.getUserMedia){return Promise.reject(new Error('getUserMedia'));}
  return navigator.mediaDevices.getUserMedia({audio:false,video:{facingMode:{ideal:'environment'},
      width:{ideal:1920},height:{ideal:1080}}}).then(function(s){
    cam=s; var v=$('#bcam'); v.srcObject=s; v.hidden=false;
    var tr=s.getVideoTracks()[0], caps=tr.getCapabilities?tr.getCapabilities():{};
    $('#torch').hidden=!caps.torch;
    return v.play().then(function(){return s;});
  });
}
function camFrame(maxW,q){var v=$('#bcam');return new Promise(function(res,rej){var n=0;
  (function grab(){
    if(!v.videoWidth||v.readyState<2){if(++n>100){rej(new Error('no frame'));return;}setTimeout(grab,50);return;}
    var k=maxW&&v.videoWidth>maxW?maxW/v.videoWidth:1, c=document.createElement('canvas');
    c.width=Math.round(v.videoWidth*k); c.height=Math.round(v.videoHeight*k);
    c.getContext('2d').drawImage(v,0,0,c.width,c.height);
    c.toBlob(function(b){if(b){res(b);}else{rej(new Error('no frame'));}},'image/jpeg',q||0.92);
  })();});}
/* Scanning with the browser's camera: while on, one frame at a time (the next only after
   the app answered the last, so a slow decoder sets the pace) goes to /api/camscan, where
   the handheld camera's decoder and vote take a read as a scan; a scan's verdict shows in
   the result area like any other. Off by the button again, a refusal or the app down. */
var camScan=false;
function camScanSet(on){camScan=on; var b=$('#camscan'); b.setAttribute('aria-pressed',on?'true':'false');
  if(on){msg.className='fb v-pending'; msg.setAttribute('data-verdict','camera'); msg.removeAttribute('data-ok');
    msg.textContent=b.getAttribute('data-on');}
  else if(screen!=='jobs'){camStop();}}
function camScanLoop(){
  if(!camScan||!cam)return;
  camFrame(1600,0.9).then(function(blob){
    return timed('/api/camscan',{method:'POST',credentials:'same-origin',body:blob,
      headers:{'X-Postedge-Token':token,'Content-Type':'image/jpeg'}},20000);
  }).then(function(r){return r.json();}).then(function(r){
    setDown(false);
    if(r.code==='bad_token'){reloadOnce();}
    if(r.ok===false){camScanSet(false); show(r); return;}
    if(r.scan){if(r.scan.result_key!==undefined){shownKey=r.scan.result_key;} show(r.scan); refresh();}
    setTimeout(camScanLoop,100);
  }).catch(function(e){if(camScan){camScanSet(false); camError(e);}});
}
function camError(e){var t=$('#bcam').getAttribute('data-err').replace('{d}',(e&&e.name)||String(e));
  show({ok:false,code:'camera',zh:t,en:t});}
function photoUrl(j,st){return '/api/jobs/'+encodeURIComponent(j)+'/photo?step='+encodeURIComponent(st);}
/* The signature pad in the delivery form: pointer events, so a finger, a stylus and a
   mouse draw alike (setPointerCapture keeps a stroke that leaves the box). The canvas is
   sized to its box times the screen's pixel ratio and starts white; the ink drawn is
   counted in CSS pixels, and a pad with less than SIGN_MIN of it is empty: the form
   says so and nothing is sent. The server checks again and stores it as a JPEG. A
   refresh that re-renders the form keeps the pad open (its drawing starts again). */
var signing=false, stroke=null, SIGN_MIN=60;
function padInit(force,pad){
  var c=pad||$('#sign-pad'); if(!c||(c.getAttribute('data-ready')&&!force))return c;
  var w=c.clientWidth, h=c.clientHeight, d=window.devicePixelRatio||1;  /* inside the border */
  c.width=Math.max(1,Math.round(w*d)); c.height=Math.max(1,Math.round(h*d));
  var g=c.getContext('2d'); g.setTransform(d,0,0,d,0,0); g.fillStyle='#fff'; g.fillRect(0,0,w,h);
  g.lineWidth=3; g.lineCap='round'; g.lineJoin='round'; g.strokeStyle='#000'; g.fillStyle='#000';
  c.setAttribute('data-ready','1'); c.setAttribute('data-ink','0');
  return c;
}
function signError(text){
  var old=$('#sign-error'); if(old){old.remove();} if(!text)return;
  var p=document.createElement('p'); p.className='form-error'; p.id='sign-error'; p.setAttribute('role','alert');
  p.textContent=text; var pad=$('#sign-pad'); pad.parentNode.insertBefore(p,pad);
}
function signMode(on){
  var f=$('#confirm'); signing=on&&!!f; if(!f)return;
  f.classList.toggle('signing',signing); if(signing){padInit();}
}
function signRestore(){if($('#confirm')){if(signing){signMode(true);}}else{signing=false;}}
function padPoint(c,e){var r=c.getBoundingClientRect();
  return {x:e.clientX-r.left-c.clientLeft,y:e.clientY-r.top-c.clientTop};}
document.addEventListener('pointerdown',function(e){
  var c=e.target; if((c.id!=='sign-pad'&&c.id!=='agent-pad')||e.button>0)return;
  e.preventDefault(); padInit(false,c); try{c.setPointerCapture(e.pointerId);}catch(x){}
  var p=padPoint(c,e); stroke={id:e.pointerId,c:c,x:p.x,y:p.y};
  var g=c.getContext('2d'); g.beginPath(); g.arc(p.x,p.y,1.5,0,2*Math.PI); g.fill();
});
document.addEventListener('pointermove',function(e){
  if(!stroke||e.pointerId!==stroke.id)return; e.preventDefault();
  var c=stroke.c, p=padPoint(c,e), g=c.getContext('2d');
  g.beginPath(); g.moveTo(stroke.x,stroke.y); g.lineTo(p.x,p.y); g.stroke();
  c.setAttribute('data-ink',String(Math.round(+c.getAttribute('data-ink')+Math.hypot(p.x-stroke.x,p.y-stroke.y))));
  stroke.x=p.x; stroke.y=p.y;
  if(+c.getAttribute('data-ink')>=SIGN_MIN){signError('');}
});
function strokeEnd(e){if(stroke&&e.pointerId===stroke.id){stroke=null;}}
document.addEventListener('pointerup',strokeEnd); document.addEventListener('pointercancel',strokeEnd);
/* The pad as a PNG data URL at ``k`` times its CSS size: at most 2x, so the request stays
   well inside the UI's 64 KiB JSON limit (handheld/webui.py) on a 3x screen. */
var SIGN_MAX=60000;
function padPng(c,k){
  var o=document.createElement('canvas');
  o.width=Math.max(1,Math.round(c.clientWidth*k)); o.height=Math.max(1,Math.round(c.clientHeight*k));
  var g=o.getContext('2d'); g.fillStyle='#fff'; g.fillRect(0,0,o.width,o.height);
  g.drawImage(c,0,0,o.width,o.height);
  return o.toDataURL('image/png');
}
function signSubmit(){
  var f=$('#confirm'), c=$('#sign-pad'); if(!f||!c)return;
  if(+c.getAttribute('data-ink')<SIGN_MIN){
    var t=$('#sign').getAttribute('data-empty'); signError(t);
    show({ok:false,verdict:'refused',code:'empty_signature',zh:t,en:t}); return;}
  var png=padPng(c,Math.min(2,window.devicePixelRatio||1));
  if(png.length>SIGN_MAX){png=padPng(c,1);}
  post('/api/deliver',{code:f.getAttribute('data-parcel'),method:'signature',value:png},null,png);
}
/* The agent's confirmation of a handover to a village point (dispatch.html): their code,
   or their name and a signature on the pad (the same pad rules as the delivery form). */
function agentConfirm(f){
  if(f.getAttribute('data-by')==='token'){
    post('/api/dispatch/handover',{method:'token',value:f.querySelector('[name=code]').value}); return;}
  var c=$('#agent-pad'), nm=f.querySelector('[name=name]').value;
  if(+c.getAttribute('data-ink')<SIGN_MIN){var t=c.getAttribute('data-empty');
    show({ok:false,verdict:'refused',code:'empty_signature',zh:t,en:t}); return;}
  var png=padPng(c,Math.min(2,window.devicePixelRatio||1));
  if(png.length>SIGN_MAX){png=padPng(c,1);}
  post('/api/dispatch/handover',{method:'signature',value:png,name:nm},null,png);
}
/* The keypad step in the delivery form (scan.html): the notice's 16-character code typed
   on large keys, shown in groups of four as on the notice; its digits layer asks a device
   keyboard for digits (inputmode), the letters layer for text. What it holds survives a
   refresh that re-renders the form; "confirm" puts it in the code field and submits. */
var keypadOn=false, keypadVal='', keypadLayer='digits';
function kpFormat(v){var raw=String(v).toUpperCase().replace(/^PE-H:/,'').replace(/[^0-9A-Z]/g,'').slice(0,16);
  return (raw.match(/.{1,4}/g)||[]).join('-');}
/* what the keypad holds: its field's value (a scanner's burst may have typed into it) */
function kpCur(){var i=$('#keypad-value'); return i?kpFormat(i.value):keypadVal;}
function keypadShow(){var i=$('#keypad-value'), k=$('#keypad'); if(!i||!k)return;
  i.value=keypadVal; k.setAttribute('data-layer',keypadLayer);
  i.setAttribute('inputmode',keypadLayer==='digits'?'numeric':'text');}
function keypadMode(on){
  var f=$('#confirm'); keypadOn=on&&!!f; document.body.classList.toggle('keypad-on',keypadOn);
  if(!f)return; f.classList.toggle('keypad',keypadOn); if(keypadOn){keypadShow();}
}
function keypadRestore(){if($('#confirm')){if(keypadOn){keypadMode(true);}}
  else{keypadVal='';keypadLayer='digits';keypadMode(false);}}
document.addEventListener('input',function(e){if(e.target.id!=='keypad-value')return;
  keypadVal=kpFormat(e.target.value); e.target.value=keypadVal;});
document.addEventListener('click',function(e){
  var b=e.target.closest('[data-action],[data-screen]'); if(!b)return;
  if(b.hasAttribute('data-screen')){go(b.getAttribute('data-screen'));return;}
  var a=b.getAttribute('data-action'), j=b.getAttribute('data-job'), st=b.getAttribute('data-step');
  if(a==='mode'){post('/api/mode',{mode:b.getAttribute('data-mode')});}
  else if(a==='photo-browser'){pending();
    camOpen().then(camFrame).then(function(blob){
      return post(photoUrl(j,st),null,blob,URL.createObjectURL(blob));
    }).catch(camError);}
  else if(a==='camscan'){if(camScan){camScanSet(false);}
    else{camOpen().then(function(){camScanSet(true); camScanLoop();}).catch(camError);}}
  else if(a==='torch'){var on=b.getAttribute('aria-pressed')!=='true';
    cam.getVideoTracks()[0].applyConstraints({advanced:[{torch:on}]}).then(function(){
      b.setAttribute('aria-pressed',on?'true':'false');}).catch(camError);}
  else if(a==='cancel-confirm'){signing=false;keypadVal='';keypadMode(false);post('/api/mode',{mode:b.getAttribute('data-mode')});}
  else if(a==='sign-open'){signMode(true);}
  else if(a==='keypad-open'){keypadVal=kpFormat($('#confirm [name=code]').value);keypadMode(true);}
  else if(a==='keypad-close'){keypadVal=kpCur();$('#confirm [name=code]').value=keypadVal;keypadMode(false);}
  else if(a==='key'){keypadVal=kpFormat(kpCur()+b.getAttribute('data-key'));keypadShow();}
  else if(a==='key-back'){var r=kpCur().replace(/-/g,'');keypadVal=kpFormat(r.slice(0,-1));keypadShow();}
  else if(a==='key-layer'){keypadVal=kpCur();keypadLayer=b.getAttribute('data-layer');keypadShow();}
  else if(a==='keypad-submit'){var cf=$('#confirm'); cf.querySelector('[name=code]').value=kpCur();
    keypadVal=''; keypadLayer='digits'; keypadMode(false); cf.requestSubmit();}
  else if(a==='sign-close'){signError('');signMode(false);}
  else if(a==='sign-clear'){signError('');padInit(true);}
  else if(a==='sign-submit'){signSubmit();}
  else if(a==='open-job'){job=j;refresh();}
  else if(a==='close-job'){job='';refresh();}
  else if(a==='pick'){post('/api/jobs/'+encodeURIComponent(j)+'/pick');}
  else if(a==='step'){post('/api/jobs/'+encodeURIComponent(j)+'/step',{step:st});}
  else if(a==='submit'){post('/api/jobs/'+encodeURIComponent(j)+'/submit');}
  else if(a==='bag-pickup'){post('/api/dispatch/pickup');}
  else if(a==='bag-remove'){post('/api/dispatch/remove',{item:b.getAttribute('data-item')});}
  else if(a==='set-point'){post('/api/dispatch/point',{point:b.getAttribute('data-point')});}
  else if(a==='handover-add'){post('/api/dispatch/handover-add',{code:b.getAttribute('data-item')});}
  else if(a==='handover-group'){post('/api/dispatch/handover-group',{group:b.getAttribute('data-group')});}
  else if(a==='handover-remove'){post('/api/dispatch/handover-remove',{item:b.getAttribute('data-item')});}
  else if(a==='agent-clear'){padInit(true,$('#agent-pad'));}
  else if(a==='photo'){pending();
    /* the device camera's picture at the moment of the tap is the thumbnail */
    post(photoUrl(j,st),{},null,'/camera.jpg?t='+Date.now());}
});
document.addEventListener('change',function(e){
  var i=e.target; if(i.getAttribute('data-action')!=='photo-file'||!i.files.length)return;
  pending();
  post(photoUrl(i.getAttribute('data-job'),i.getAttribute('data-step')),null,i.files[0],
       URL.createObjectURL(i.files[0]));
});
document.addEventListener('submit',function(e){
  e.preventDefault(); var f=e.target;
  if(f.id==='scan-form'){var c=f.querySelector('input').value;f.querySelector('input').value='';
    post('/api/scan',{code:c});}
  else if(f.id==='confirm'){var code=f.querySelector('[name=code]').value,
    name=f.querySelector('[name=name]').value;
    post('/api/deliver',{code:f.getAttribute('data-parcel'),method:code?'code':'name',value:code||name});}
  else if(f.id==='handover-scan'){var hi=f.querySelector('input'), hc=hi.value; hi.value='';
    post('/api/dispatch/handover-add',{code:hc});}
  else if(f.id==='agent-confirm'){agentConfirm(f);}
  else if(f.classList.contains('handout')){var tok=f.querySelector('[name=code]'),
    tv=tok?tok.value:'', nm=f.querySelector('[name=name]').value,
    g=f.getAttribute('data-group'), sh=f.getAttribute('data-share');
    post('/api/dispatch/handout',{group:g,share:+sh,method:tv?'token':'name',value:tv||nm}).then(function(r){
      /* a refusal is said inside the form too, and stays there across refreshes */
      handoutErr=r&&!r.ok?{g:g,s:sh,text:r[lang]||r.en||r.code}:null;
      var old=f.querySelector('.form-error'); if(old){old.remove();} formError();});}
});
/* Bulletin-board forms on the jobs screen (survey, condition report, could not complete,
   report on a cached site): a form with data-post sends its fields as JSON there; an
   answer naming a job opens it. */
document.addEventListener('submit',function(e){
  var f=e.target, u=f.getAttribute('data-post'); if(!u)return; e.preventDefault();
  var d={}; new FormData(f).forEach(function(v,k){d[k]=v;});
  post(u,d).then(function(r){if(r&&r.ok&&r.job&&f.hasAttribute('data-open')){job=r.job;refresh();}});
});
/* The browser's location (geolocation = true in the config): a fresh fix every second, posted
   quietly (no message, no refresh); the server's gate decides (handheld/geolocation.py). */
function quiet(url,body){return fetch(url,{method:'POST',credentials:'same-origin',body:JSON.stringify(body),
  headers:{'X-Postedge-Token':token,'Content-Type':'application/json'}}).catch(function(){});}
var geoBusy=false;
function geo(){
  if(geoBusy)return; geoBusy=true;
  navigator.geolocation.getCurrentPosition(function(p){var c=p.coords;
    quiet('/api/position',{lat:c.latitude,lon:c.longitude,accuracy_m:c.accuracy,alt_m:c.altitude,
      stamp:p.timestamp,age_ms:Math.max(0,Date.now()-p.timestamp)}).then(function(){geoBusy=false;});
  },function(e){quiet('/api/position',{error:e.code}).then(function(){geoBusy=false;});},
  {enableHighAccuracy:true,maximumAge:0,timeout:10000});
}
if(document.querySelector('meta[name="postedge-geo"]').getAttribute('content')==='1'&&navigator.geolocation){
  geo(); setInterval(geo,1000);
}
/* The installable app (docs/handheld.md): the service worker keeps the page's shell, so
   it opens with no network and says the app is not answering instead of nothing. */
function sw(){navigator.serviceWorker.register('/sw.js',{scope:'/'}).catch(function(){});}
/* after the page has settled: installing fetches the shell, which must not slow the first scans */
if('serviceWorker' in navigator){if(document.readyState==='complete'){setTimeout(sw,2000);}
  else{window.addEventListener('load',function(){setTimeout(sw,2000);});}}
go('scan');
setInterval(refresh,1000);
})();
