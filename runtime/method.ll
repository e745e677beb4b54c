; graphc_method(self, args, nargs, kwnames): the native CPython method (METH_FASTCALL |
; METH_KEYWORDS) of runtime/fastmethod.py, which reads this file, puts the measured object
; offsets in for the {NAMES} in braces and compiles it once per host (then the disk cache).
declare ptr @PyBytes_FromStringAndSize(ptr, i64)
declare ptr @PyDict_GetItem(ptr, ptr)
declare ptr @PyDict_New()
declare i32 @PyDict_SetItem(ptr, ptr, ptr)
declare i64 @PyDict_Size(ptr)
declare void @PyErr_Clear()
declare void @PyEval_RestoreThread(ptr)
declare ptr @PyEval_SaveThread()
declare double @PyFloat_AsDouble(ptr)
declare ptr @PyLong_AsVoidPtr(ptr)
declare ptr @PyObject_Call(ptr, ptr, ptr)
declare ptr @PyObject_CallFunctionObjArgs(ptr, ...)
declare ptr @PyMethod_New(ptr, ptr)
declare ptr @PyTuple_Pack(i64, ...)
declare ptr @PyTuple_New(i64)
declare i32 @PyTuple_SetItem(ptr, i64, ptr)
declare ptr @PyObject_GetAttr(ptr, ptr)
declare i32 @PyObject_RichCompareBool(ptr, ptr, i32)
declare ptr @PyObject_Vectorcall(ptr, ptr, i64, ptr)
declare ptr @PyThreadState_GetDict()
declare void @Py_DecRef(ptr)
declare void @Py_IncRef(ptr)
@graphc_obj_ndarray = external global i8
@graphc_obj_long = external global i8
@graphc_obj_dict = external global i8
@graphc_obj_float = external global i8
@graphc_obj_attr = external global i8
@graphc_obj_empty = external global i8
@graphc_obj_fallback = external global i8
@graphc_obj_failed = external global i8
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

define private ptr @slot_at(ptr %st, i64 %s) {
  %P = load i64, ptr %st
  %rp = getelementptr i64, ptr %st, i64 1
  %R = load i64, ptr %rp
  %sp = getelementptr i64, ptr %st, i64 4
  %stride = load i64, ptr %sp
  %R2 = add i64 %R, %R
  %P3 = mul i64 %P, 3
  %a = add i64 %P3, %R2
  %b = add i64 %a, {HEADER}
  %c = mul i64 %s, %stride
  %w = add i64 %b, %c
  %slot = getelementptr i64, ptr %st, i64 %w
  ret ptr %slot
}

; the first of a slot's per-param records (RECORD words each: dtype, rank, 8 dims, the flags
; the array must have, its bytes)
define private ptr @records(ptr %st, ptr %slot) {
  %nsp = getelementptr i64, ptr %st, i64 2
  %nsym = load i64, ptr %nsp
  %pw = add i64 %nsym, 3
  %pbase = getelementptr i64, ptr %slot, i64 %pw
  ret ptr %pbase
}

; whether slot s holds a signature that the arrays in perm (param order) match exactly
define private i1 @fits(ptr %st, i64 %s, ptr %perm) {
entry:
  %slot = call ptr @slot_at(ptr %st, i64 %s)
  %valid = load i64, ptr %slot
  %isvalid = icmp ne i64 %valid, 0
  br i1 %isvalid, label %start, label %no
start:
  %P = load i64, ptr %st
  %pbase = call ptr @records(ptr %st, ptr %slot)
  br label %phead
phead:
  %j = phi i64 [ 0, %start ], [ %j1, %pnext ]
  %pmore = icmp slt i64 %j, %P
  br i1 %pmore, label %pbody, label %yes
pbody:
  %ap = getelementptr ptr, ptr %perm, i64 %j
  %a = load ptr, ptr %ap
  %jw = mul i64 %j, {RECORD}
  %rec = getelementptr i64, ptr %pbase, i64 %jw
  %tp = getelementptr i8, ptr %a, i64 {OFF_TYPE}
  %t = load ptr, ptr %tp
  %tok = icmp eq ptr %t, @graphc_obj_ndarray
  br i1 %tok, label %chk_descr, label %no
chk_descr:
  %dp = getelementptr i8, ptr %a, i64 {OFF_DESCR}
  %d = load ptr, ptr %dp
  %wantd = load ptr, ptr %rec
  %dok = icmp eq ptr %d, %wantd
  %fp = getelementptr i8, ptr %a, i64 {OFF_FLAGS}
  %f32 = load i32, ptr %fp
  %f = zext i32 %f32 to i64
  %wfp = getelementptr i64, ptr %rec, i64 10
  %wantf = load i64, ptr %wfp
  %fm = and i64 %f, %wantf
  %fok = icmp eq i64 %fm, %wantf
  %ndp = getelementptr i8, ptr %a, i64 {OFF_ND}
  %nd32 = load i32, ptr %ndp
  %nd = sext i32 %nd32 to i64
  %recnd = getelementptr i64, ptr %rec, i64 1
  %wantnd = load i64, ptr %recnd
  %ndok = icmp eq i64 %nd, %wantnd
  %ok1 = and i1 %dok, %fok
  %ok2 = and i1 %ok1, %ndok
  br i1 %ok2, label %shape, label %no
shape:
  %shp = getelementptr i8, ptr %a, i64 {OFF_DIMS}
  %sh = load ptr, ptr %shp
  br label %dhead
dhead:
  %k = phi i64 [ 0, %shape ], [ %k1, %dbody ]
  %dmore = icmp slt i64 %k, %nd
  br i1 %dmore, label %dcheck, label %pnext
dcheck:
  %gotp = getelementptr i64, ptr %sh, i64 %k
  %got = load i64, ptr %gotp
  %kw = add i64 %k, 2
  %wantp = getelementptr i64, ptr %rec, i64 %kw
  %want = load i64, ptr %wantp
  %same = icmp eq i64 %got, %want
  br i1 %same, label %dbody, label %no
dbody:
  %k1 = add i64 %k, 1
  br label %dhead
pnext:
  %j1 = add i64 %j, 1
  br label %phead
yes:
  ret i1 1
no:
  ret i1 0
}

; whether an array that receives a result in place shares a byte with any other argument
; (then the Python path decides what is staged: np.may_share_memory is its rule)
define private i1 @clash(ptr %st, ptr %slot, ptr %perm) {
entry:
  %P = load i64, ptr %st
  %rp = getelementptr i64, ptr %st, i64 1
  %R = load i64, ptr %rp
  %pbase = call ptr @records(ptr %st, ptr %slot)
  %tw = add i64 %P, %R
  %tw1 = add i64 %tw, {HEADER}
  %targets = getelementptr i64, ptr %st, i64 %tw1
  br label %rhead
rhead:
  %r = phi i64 [ 0, %entry ], [ %r1, %rnext ]
  %rmore = icmp slt i64 %r, %R
  br i1 %rmore, label %rbody, label %none
rbody:
  %tp = getelementptr i64, ptr %targets, i64 %r
  %t = load i64, ptr %tp
  %isin = icmp sge i64 %t, 0
  br i1 %isin, label %tstart, label %rnext
tstart:
  %top = getelementptr ptr, ptr %perm, i64 %t
  %to = load ptr, ptr %top
  %tdp = getelementptr i8, ptr %to, i64 {OFF_DATA}
  %td = load i64, ptr %tdp
  %tw2 = mul i64 %t, {RECORD}
  %tw3 = add i64 %tw2, 11
  %tnp = getelementptr i64, ptr %pbase, i64 %tw3
  %tn = load i64, ptr %tnp
  %tend = add i64 %td, %tn
  br label %jhead
jhead:
  %j = phi i64 [ 0, %tstart ], [ %j1, %jnext ]
  %jmore = icmp slt i64 %j, %P
  br i1 %jmore, label %jbody, label %rnext
jbody:
  %isself = icmp eq i64 %j, %t
  br i1 %isself, label %jnext, label %jcheck
jcheck:
  %aop = getelementptr ptr, ptr %perm, i64 %j
  %ao = load ptr, ptr %aop
  %adp = getelementptr i8, ptr %ao, i64 {OFF_DATA}
  %ad = load i64, ptr %adp
  %aw2 = mul i64 %j, {RECORD}
  %aw3 = add i64 %aw2, 11
  %anp = getelementptr i64, ptr %pbase, i64 %aw3
  %an = load i64, ptr %anp
  %aend = add i64 %ad, %an
  %before = icmp ult i64 %ad, %tend
  %after = icmp ult i64 %td, %aend
  %both = and i1 %before, %after
  br i1 %both, label %found, label %jnext
jnext:
  %j1 = add i64 %j, 1
  br label %jhead
rnext:
  %r1 = add i64 %r, 1
  br label %rhead
found:
  ret i1 1
none:
  ret i1 0
}

; the slot whose signature the arguments match, or -1. Each param comes from where the table
; says (its source word): a keyword (values at kw, names in kwnames), or, under its key, the
; first or the second dict, which hold exactly those params (no other key). Their arrays go to
; perm in param order, each with a reference taken (none left when no slot matches).
define private i64 @match(ptr %st, ptr %kw, i64 %nkw, ptr %kwnames, ptr %perm, ptr %dict0,
                          ptr %dict1) {
entry:
  %P = load i64, ptr %st
  %rp = getelementptr i64, ptr %st, i64 1
  %R = load i64, ptr %rp
  %pr = add i64 %P, %R
  %pr2 = add i64 %pr, %R
  %srcw = add i64 %pr2, {HEADER}
  %sources = getelementptr i64, ptr %st, i64 %srcw
  %keys = getelementptr i64, ptr %sources, i64 %P
  %bytes = mul i64 %P, 8
  call void @llvm.memset.p0.i64(ptr %perm, i8 0, i64 %bytes, i1 0)
  %okn = icmp sle i64 %nkw, %P
  br i1 %okn, label %clear, label %no
clear:
  %items = getelementptr i8, ptr %kwnames, i64 {TUPLE_ITEMS}
  br label %khead
khead:
  %i = phi i64 [ 0, %clear ], [ %i1, %place ]
  %kmore = icmp slt i64 %i, %nkw
  br i1 %kmore, label %kbody, label %fromdicts
kbody:
  %np = getelementptr ptr, ptr %items, i64 %i
  %name = load ptr, ptr %np
  br label %fhead
fhead:
  %j = phi i64 [ 0, %kbody ], [ %j1, %fnext ]
  %fmore = icmp slt i64 %j, %P
  br i1 %fmore, label %fbody, label %no
fbody:
  %jsp = getelementptr i64, ptr %sources, i64 %j
  %js = load i64, ptr %jsp
  %bykw = icmp slt i64 %js, 0
  br i1 %bykw, label %fname, label %fnext
fname:
  %jw = add i64 %j, {HEADER}
  %pnp = getelementptr i64, ptr %st, i64 %jw
  %pn = load ptr, ptr %pnp
  %eq = icmp eq ptr %pn, %name
  br i1 %eq, label %found, label %byvalue
byvalue:
  ; a keyword that is not the interned name (a ** dict's key built at run time)
  %cmp = call i32 @PyObject_RichCompareBool(ptr %pn, ptr %name, i32 2)
  %veq = icmp eq i32 %cmp, 1
  br i1 %veq, label %found, label %unequal
unequal:
  %err = icmp slt i32 %cmp, 0
  br i1 %err, label %cmperr, label %fnext
cmperr:
  call void @PyErr_Clear()
  br label %no
fnext:
  %j1 = add i64 %j, 1
  br label %fhead
found:
  %dst = getelementptr ptr, ptr %perm, i64 %j
  %old = load ptr, ptr %dst
  %dup = icmp ne ptr %old, null
  br i1 %dup, label %no, label %place
place:
  %avp = getelementptr ptr, ptr %kw, i64 %i
  %av = load ptr, ptr %avp
  call void @Py_IncRef(ptr %av)
  store ptr %av, ptr %dst
  %i1 = add i64 %i, 1
  br label %khead
fromdicts:
  br label %dhead
dhead:
  %q = phi i64 [ 0, %fromdicts ], [ %q1, %dnext ]
  %taken0 = phi i64 [ 0, %fromdicts ], [ %t0, %dnext ]
  %taken1 = phi i64 [ 0, %fromdicts ], [ %t1, %dnext ]
  %dmore = icmp slt i64 %q, %P
  br i1 %dmore, label %dbody, label %dcount
dbody:
  %qp = getelementptr ptr, ptr %perm, i64 %q
  %qo = load ptr, ptr %qp
  %have = icmp ne ptr %qo, null
  br i1 %have, label %dnext, label %which
which:
  %qsp = getelementptr i64, ptr %sources, i64 %q
  %qs = load i64, ptr %qsp
  %qkw = icmp slt i64 %qs, 0
  br i1 %qkw, label %no, label %lookup
lookup:
  %infirst = icmp eq i64 %qs, 0
  %qd = select i1 %infirst, ptr %dict0, ptr %dict1
  %qdok = icmp ne ptr %qd, null
  br i1 %qdok, label %getitem, label %no
getitem:
  %qkp = getelementptr ptr, ptr %keys, i64 %q
  %qk = load ptr, ptr %qkp
  %v = call ptr @PyDict_GetItem(ptr %qd, ptr %qk)
  %gotv = icmp ne ptr %v, null
  br i1 %gotv, label %keep, label %no
keep:
  call void @Py_IncRef(ptr %v)
  store ptr %v, ptr %qp
  br label %dnext
dnext:
  %add0 = phi i64 [ 0, %dbody ], [ 1, %keep ]
  %firsthere = phi i1 [ 0, %dbody ], [ %infirst, %keep ]
  %inc0 = select i1 %firsthere, i64 %add0, i64 0
  %inc1 = select i1 %firsthere, i64 0, i64 %add0
  %t0 = add i64 %taken0, %inc0
  %t1 = add i64 %taken1, %inc1
  %q1 = add i64 %q, 1
  br label %dhead
dcount:
  ; every key of each dict was a param's
  %has0 = icmp ne ptr %dict0, null
  br i1 %has0, label %size0, label %count1
size0:
  %n0 = call i64 @PyDict_Size(ptr %dict0)
  %all0 = icmp eq i64 %n0, %taken0
  br i1 %all0, label %count1, label %no
count1:
  %has1 = icmp ne ptr %dict1, null
  br i1 %has1, label %size1, label %slots
size1:
  %n1 = call i64 @PyDict_Size(ptr %dict1)
  %all1 = icmp eq i64 %n1, %taken1
  br i1 %all1, label %slots, label %no
slots:
  %kp = getelementptr i64, ptr %st, i64 3
  %K = load i64, ptr %kp
  br label %shead
shead:
  %s = phi i64 [ 0, %slots ], [ %s1, %snext ]
  %smore = icmp slt i64 %s, %K
  br i1 %smore, label %sbody, label %no
sbody:
  %fit = call i1 @fits(ptr %st, i64 %s, ptr %perm)
  br i1 %fit, label %hit, label %snext
snext:
  %s1 = add i64 %s, 1
  br label %shead
hit:
  ret i64 %s
no:
  call void @decref_all(ptr %perm, i64 %P)
  ret i64 -1
}

; drop the n references in res (Py_DecRef skips a null)
define private void @decref_all(ptr %res, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [ 0, %entry ], [ %i1, %body ]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %p = getelementptr ptr, ptr %res, i64 %i
  %o = load ptr, ptr %p
  call void @Py_DecRef(ptr %o)
  %i1 = add i64 %i, 1
  br label %head
done:
  ret void
}

define ptr @graphc_method(ptr %self, ptr %args, i64 %nargs, ptr %kwnames) {
entry:
  %perm = alloca [64 x ptr]
  %res = alloca [64 x ptr]
  %tups = alloca [64 x ptr]
  %block = alloca [136 x ptr]
  %dims = alloca [72 x i64]
  %scalar = alloca double
  %errbuf = alloca [80 x i64]
  %attr = call ptr @PyObject_GetAttr(ptr %self, ptr @graphc_obj_attr)
  %gotattr = icmp ne ptr %attr, null
  br i1 %gotattr, label %isint, label %clear_fallback
isint:
  %atp = getelementptr i8, ptr %attr, i64 {OFF_TYPE}
  %at = load ptr, ptr %atp
  %isl = icmp eq ptr %at, @graphc_obj_long
  br i1 %isl, label %readstate, label %drop_attr
drop_attr:
  call void @Py_DecRef(ptr %attr)
  br label %fallback
readstate:
  %st = call ptr @PyLong_AsVoidPtr(ptr %attr)
  call void @Py_DecRef(ptr %attr)
  %hasst = icmp ne ptr %st, null
  br i1 %hasst, label %positional, label %clear_fallback
positional:
  ; keywords only, or (a scalar param) ndicts dicts of arrays, a float, then keywords
  %ndp = getelementptr i64, ptr %st, i64 11
  %ndicts = load i64, ptr %ndp
  %hassc = icmp ne i64 %ndicts, 0
  %sc = zext i1 %hassc to i64
  %npos = add i64 %ndicts, %sc
  %posok = icmp eq i64 %nargs, %npos
  br i1 %posok, label %keywords, label %fallback
keywords:
  %hask = icmp ne ptr %kwnames, null
  br i1 %hask, label %countkw, label %pair
countkw:
  %nkwp = getelementptr i8, ptr %kwnames, i64 {TUPLE_SIZE}
  %nkw0 = load i64, ptr %nkwp
  br label %pair
pair:
  %nkw = phi i64 [ 0, %keywords ], [ %nkw0, %countkw ]
  br i1 %hassc, label %pairdict, label %domatch
pairdict:
  %d0 = load ptr, ptr %args
  %d0tp = getelementptr i8, ptr %d0, i64 {OFF_TYPE}
  %d0t = load ptr, ptr %d0tp
  %isdict0 = icmp eq ptr %d0t, @graphc_obj_dict
  %twodicts = icmp sgt i64 %ndicts, 1
  %a1 = getelementptr ptr, ptr %args, i64 1
  %d1 = load ptr, ptr %a1
  %d1tp = getelementptr i8, ptr %d1, i64 {OFF_TYPE}
  %d1t = load ptr, ptr %d1tp
  %isdict1 = icmp eq ptr %d1t, @graphc_obj_dict
  %d1ok = select i1 %twodicts, i1 %isdict1, i1 1
  %dictsok = and i1 %isdict0, %d1ok
  %dsecond = select i1 %twodicts, ptr %d1, ptr null
  %flp0 = getelementptr ptr, ptr %args, i64 %ndicts
  %fo = load ptr, ptr %flp0
  %ftp = getelementptr i8, ptr %fo, i64 {OFF_TYPE}
  %ft = load ptr, ptr %ftp
  %isfloat = icmp eq ptr %ft, @graphc_obj_float
  %both = and i1 %dictsok, %isfloat
  br i1 %both, label %readfloat, label %fallback
readfloat:
  %fv = call double @PyFloat_AsDouble(ptr %fo)
  store double %fv, ptr %scalar
  br label %domatch
domatch:
  %kdict0 = phi ptr [ null, %pair ], [ %d0, %readfloat ]
  %kdict1 = phi ptr [ null, %pair ], [ %dsecond, %readfloat ]
  %kwv = getelementptr ptr, ptr %args, i64 %nargs
  %s = call i64 @match(ptr %st, ptr %kwv, i64 %nkw, ptr %kwnames, ptr %perm, ptr %kdict0,
                       ptr %kdict1)
  %hit = icmp sge i64 %s, 0
  br i1 %hit, label %alloc, label %fallback
alloc:
  %P = load i64, ptr %st
  %Rp = getelementptr i64, ptr %st, i64 1
  %R = load i64, ptr %Rp
  %nsp = getelementptr i64, ptr %st, i64 2
  %nsym = load i64, ptr %nsp
  %slot = call ptr @slot_at(ptr %st, i64 %s)
  %pr = mul i64 %P, {RECORD}
  %rw0 = add i64 %nsym, 3
  %rw = add i64 %rw0, %pr
  %rtup = getelementptr i64, ptr %slot, i64 %rw
  %tgw = add i64 %P, %R
  %tgw1 = add i64 %tgw, {HEADER}
  %targets = getelementptr i64, ptr %st, i64 %tgw1
  ; np.empty may run Python code (a collection) that rewrites this slot: hold its arguments
  %rbytes = mul i64 %R, 8
  call void @llvm.memcpy.p0.p0.i64(ptr %tups, ptr %rtup, i64 %rbytes, i1 0)
  br label %ihead
ihead:
  %ri = phi i64 [ 0, %alloc ], [ %ri1, %ibody ]
  %imore = icmp slt i64 %ri, %R
  br i1 %imore, label %ibody, label %ahead
ibody:
  %itp = getelementptr ptr, ptr %tups, i64 %ri
  %it = load ptr, ptr %itp
  call void @Py_IncRef(ptr %it)
  %ri1 = add i64 %ri, 1
  br label %ihead
ahead:
  %r = phi i64 [ 0, %ihead ], [ %r1, %abody ]
  %amore = icmp slt i64 %r, %R
  br i1 %amore, label %awhich, label %allocated
awhich:
  ; a result written into an argument's array (sgd_step's params), else a fresh one
  %tgp = getelementptr i64, ptr %targets, i64 %r
  %tg = load i64, ptr %tgp
  %intoarg = icmp sge i64 %tg, 0
  br i1 %intoarg, label %aarg, label %acall
aarg:
  %tap = getelementptr ptr, ptr %perm, i64 %tg
  %ta = load ptr, ptr %tap
  call void @Py_IncRef(ptr %ta)
  br label %abody
acall:
  %tp = getelementptr ptr, ptr %tups, i64 %r
  %tup = load ptr, ptr %tp
  %o0 = call ptr @PyObject_Call(ptr @graphc_obj_empty, ptr %tup, ptr null)
  %made = icmp ne ptr %o0, null
  br i1 %made, label %abody, label %afail
abody:
  %o = phi ptr [ %ta, %aarg ], [ %o0, %acall ]
  %op = getelementptr ptr, ptr %res, i64 %r
  store ptr %o, ptr %op
  %r1 = add i64 %r, 1
  br label %ahead
afail:
  call void @decref_all(ptr %res, i64 %r)
  call void @decref_all(ptr %tups, i64 %R)
  call void @decref_all(ptr %perm, i64 %P)
  br label %clear_fallback
allocated:
  call void @decref_all(ptr %tups, i64 %R)
  br label %verify
verify:
  ; np.empty may have run Python code (a collection): check again before any pointer is read
  %still = call i1 @fits(ptr %st, i64 %s, ptr %perm)
  br i1 %still, label %apart, label %drop_results
apart:
  %clashes = call i1 @clash(ptr %st, ptr %slot, ptr %perm)
  br i1 %clashes, label %drop_results, label %workspace
workspace:
  %tdict = call ptr @PyThreadState_GetDict()
  %hasd = icmp ne ptr %tdict, null
  br i1 %hasd, label %getws, label %drop_results
getws:
  %keyp = getelementptr i64, ptr %st, i64 6
  %key = load ptr, ptr %keyp
  %wobj = call ptr @PyDict_GetItem(ptr %tdict, ptr %key)
  %hasw = icmp ne ptr %wobj, null
  br i1 %hasw, label %wsint, label %drop_results
wsint:
  %wtp = getelementptr i8, ptr %wobj, i64 {OFF_TYPE}
  %wt = load ptr, ptr %wtp
  %wisl = icmp eq ptr %wt, @graphc_obj_long
  br i1 %wisl, label %wsread, label %drop_results
wsread:
  %ws = call ptr @PyLong_AsVoidPtr(ptr %wobj)
  %hasws = icmp ne ptr %ws, null
  br i1 %hasws, label %wscheck, label %clear_drop
wscheck:
  %busy = load i64, ptr %ws
  %relp = getelementptr i64, ptr %ws, i64 4
  %rel = load i64, ptr %relp
  %addrp = getelementptr i64, ptr %ws, i64 1
  %addr = load i64, ptr %addrp
  %sizep = getelementptr i64, ptr %ws, i64 2
  %size = load i64, ptr %sizep
  %nbp = getelementptr i64, ptr %slot, i64 2
  %need = load i64, ptr %nbp
  %idle = or i64 %busy, %rel
  %isidle = icmp eq i64 %idle, 0
  %hasblock = icmp ne i64 %addr, 0
  %fitsz = icmp sle i64 %need, %size
  %u1 = and i1 %isidle, %hasblock
  %usable = and i1 %u1, %fitsz
  br i1 %usable, label %shrink, label %drop_results
shrink:
  %ratp = getelementptr i64, ptr %st, i64 9
  %ratio = load i64, ptr %ratp
  %needr = mul i64 %need, %ratio
  %small = icmp slt i64 %needr, %size
  %smp = getelementptr i64, ptr %ws, i64 3
  %sc0 = load i64, ptr %smp
  %sc1 = add i64 %sc0, 1
  %newsc = select i1 %small, i64 %sc1, i64 0
  %afp = getelementptr i64, ptr %st, i64 8
  %after = load i64, ptr %afp
  %due = icmp sge i64 %newsc, %after
  br i1 %due, label %drop_results, label %fill
fill:
  store i64 %newsc, ptr %smp
  br label %phead
phead:
  ; the block: the params' data, the scalar's address (if any), the results' data, then the
  ; dims, the flags and the workspace
  %j = phi i64 [ 0, %fill ], [ %j1, %pbody ]
  %pmore = icmp slt i64 %j, %P
  br i1 %pmore, label %pbody, label %addscalar
pbody:
  %objp = getelementptr ptr, ptr %perm, i64 %j
  %obj = load ptr, ptr %objp
  %datap = getelementptr i8, ptr %obj, i64 {OFF_DATA}
  %data = load ptr, ptr %datap
  %bp = getelementptr ptr, ptr %block, i64 %j
  store ptr %data, ptr %bp
  %j1 = add i64 %j, 1
  br label %phead
addscalar:
  %scb = getelementptr ptr, ptr %block, i64 %P
  store ptr %scalar, ptr %scb
  %first = add i64 %P, %sc
  br label %qhead
qhead:
  %q = phi i64 [ 0, %addscalar ], [ %q1, %qbody ]
  %qmore = icmp slt i64 %q, %R
  br i1 %qmore, label %qbody, label %fixed
qbody:
  %robjp = getelementptr ptr, ptr %res, i64 %q
  %robj = load ptr, ptr %robjp
  %rdatap = getelementptr i8, ptr %robj, i64 {OFF_DATA}
  %rdata = load ptr, ptr %rdatap
  %qb = add i64 %first, %q
  %rbp = getelementptr ptr, ptr %block, i64 %qb
  store ptr %rdata, ptr %rbp
  %q1 = add i64 %q, 1
  br label %qhead
fixed:
  %n = add i64 %first, %R
  %dsrc = getelementptr i64, ptr %slot, i64 3
  %dbytes = mul i64 %nsym, 8
  call void @llvm.memcpy.p0.p0.i64(ptr %dims, ptr %dsrc, i64 %dbytes, i1 0)
  %b0 = getelementptr ptr, ptr %block, i64 %n
  store ptr %dims, ptr %b0
  %n1 = add i64 %n, 1
  %b1 = getelementptr ptr, ptr %block, i64 %n1
  %flp = getelementptr i64, ptr %st, i64 7
  %fl = load ptr, ptr %flp
  store ptr %fl, ptr %b1
  %n2 = add i64 %n, 2
  %b2 = getelementptr ptr, ptr %block, i64 %n2
  %addrptr = inttoptr i64 %addr to ptr
  store ptr %addrptr, ptr %b2
  %enp = getelementptr i64, ptr %st, i64 5
  %entryfn = load ptr, ptr %enp
  %rgp = getelementptr i64, ptr %slot, i64 1
  %rg = load i64, ptr %rgp
  %drop = icmp ne i64 %rg, 0
  store i64 1, ptr %ws
  br i1 %drop, label %nogil, label %withgil
withgil:
  %rc0 = call i32 %entryfn(ptr %block)
  br label %ran
nogil:
  %ts = call ptr @PyEval_SaveThread()
  %rc1 = call i32 %entryfn(ptr %block)
  call void @PyEval_RestoreThread(ptr %ts)
  br label %ran
ran:
  %rc = phi i32 [ %rc0, %withgil ], [ %rc1, %nogil ]
  store i64 0, ptr %ws
  %failed = icmp ne i32 %rc, 0
  br i1 %failed, label %failure, label %result
failure:
  ; a call that wrote into its arguments must not run again: ``failed(self, what)`` raises
  ; the error that ``what`` (bytes: the code, the slot, the dims, the kernel's details) says
  %wrp = getelementptr i64, ptr %st, i64 12
  %writes = load i64, ptr %wrp
  %raise = icmp ne i64 %writes, 0
  br i1 %raise, label %report, label %drop_results
report:
  %rc64 = sext i32 %rc to i64
  store i64 %rc64, ptr %errbuf
  %er1 = getelementptr i64, ptr %errbuf, i64 1
  store i64 %s, ptr %er1
  %er2 = getelementptr i64, ptr %errbuf, i64 2
  %ewords = add i64 %nsym, {DETAIL_WORDS}
  %ebytes = mul i64 %ewords, 8
  call void @llvm.memcpy.p0.p0.i64(ptr %er2, ptr %dims, i64 %ebytes, i1 0)
  call void @decref_all(ptr %res, i64 %R)
  call void @decref_all(ptr %perm, i64 %P)
  %allbytes = add i64 %ebytes, 16
  %what = call ptr @PyBytes_FromStringAndSize(ptr %errbuf, i64 %allbytes)
  %haswhat = icmp ne ptr %what, null
  br i1 %haswhat, label %callfailed, label %nowhat
nowhat:
  ret ptr null
callfailed:
  %raised = call ptr (ptr, ...) @PyObject_CallFunctionObjArgs(ptr @graphc_obj_failed, ptr %self, ptr %what, ptr null)
  call void @Py_DecRef(ptr %what)
  ret ptr %raised
result:
  call void @decref_all(ptr %perm, i64 %P)
  ; result 0 alone (split -1), a tuple of every result (split -2), one dict of results, or
  ; (split > 0) a tuple of two: the first split results, the rest
  %splitp = getelementptr i64, ptr %st, i64 10
  %split = load i64, ptr %splitp
  %alone = icmp eq i64 %split, -1
  br i1 %alone, label %only, label %notalone
only:
  %r0 = load ptr, ptr %res
  call void @Py_IncRef(ptr %r0)
  call void @decref_all(ptr %res, i64 %R)
  ret ptr %r0
notalone:
  %astuple = icmp eq i64 %split, -2
  br i1 %astuple, label %tuple, label %dicts
tuple:
  %tup0 = call ptr @PyTuple_New(i64 %R)
  %hastup = icmp ne ptr %tup0, null
  br i1 %hastup, label %thead, label %notuple
notuple:
  call void @decref_all(ptr %res, i64 %R)
  ret ptr null
thead:
  %ti = phi i64 [ 0, %tuple ], [ %ti1, %tbody ]
  %tmore = icmp slt i64 %ti, %R
  br i1 %tmore, label %tbody, label %tdone
tbody:
  %trp = getelementptr ptr, ptr %res, i64 %ti
  %tro = load ptr, ptr %trp
  %tset = call i32 @PyTuple_SetItem(ptr %tup0, i64 %ti, ptr %tro)   ; takes the reference
  %ti1 = add i64 %ti, 1
  br label %thead
tdone:
  ret ptr %tup0
dicts:
  %two = icmp sgt i64 %split, 0
  %dict1 = call ptr @PyDict_New()
  %hasdict = icmp ne ptr %dict1, null
  br i1 %hasdict, label %second, label %nodict
second:
  br i1 %two, label %newsecond, label %rhead
newsecond:
  %made2 = call ptr @PyDict_New()
  %has2 = icmp ne ptr %made2, null
  br i1 %has2, label %rhead, label %nosecond
nosecond:
  call void @Py_DecRef(ptr %dict1)
  br label %nodict
nodict:
  call void @decref_all(ptr %res, i64 %R)
  ret ptr null
rhead:
  %dict2 = phi ptr [ %dict1, %second ], [ %made2, %newsecond ], [ %dict2, %rnext ]
  %rq = phi i64 [ 0, %second ], [ 0, %newsecond ], [ %rq1, %rnext ]
  %rmore = icmp slt i64 %rq, %R
  br i1 %rmore, label %rbody, label %done
rbody:
  %rqw = add i64 %rq, {HEADER}
  %rqw1 = add i64 %rqw, %P
  %rnp = getelementptr i64, ptr %st, i64 %rqw1
  %rname = load ptr, ptr %rnp
  %rop = getelementptr ptr, ptr %res, i64 %rq
  %ro = load ptr, ptr %rop
  %late = icmp sge i64 %rq, %split
  %intwo = and i1 %two, %late
  %into = select i1 %intwo, ptr %dict2, ptr %dict1
  %src = call i32 @PyDict_SetItem(ptr %into, ptr %rname, ptr %ro)
  %setok = icmp eq i32 %src, 0
  br i1 %setok, label %rnext, label %setfail
rnext:
  %rq1 = add i64 %rq, 1
  br label %rhead
setfail:
  call void @decref_all(ptr %res, i64 %R)
  call void @Py_DecRef(ptr %dict1)
  br i1 %two, label %setfail2, label %setfailed
setfail2:
  call void @Py_DecRef(ptr %dict2)
  br label %setfailed
setfailed:
  ret ptr null
done:
  call void @decref_all(ptr %res, i64 %R)
  br i1 %two, label %pack, label %one
one:
  ret ptr %dict1
pack:
  %pair2 = call ptr (i64, ...) @PyTuple_Pack(i64 2, ptr %dict1, ptr %dict2)
  call void @Py_DecRef(ptr %dict1)
  call void @Py_DecRef(ptr %dict2)
  ret ptr %pair2
clear_drop:
  call void @PyErr_Clear()
  br label %drop_results
drop_results:
  %Rd = load i64, ptr %Rp
  call void @decref_all(ptr %res, i64 %Rd)
  %Pd = load i64, ptr %st
  call void @decref_all(ptr %perm, i64 %Pd)
  br label %fallback
clear_fallback:
  call void @PyErr_Clear()
  br label %fallback
fallback:
  ; the Python path: fallback bound to self, called with the arguments as they came (the
  ; bound method puts self in front itself, on the heap if there are many)
  %bound = call ptr @PyMethod_New(ptr @graphc_obj_fallback, ptr %self)
  %isbound = icmp ne ptr %bound, null
  br i1 %isbound, label %callpy, label %nobound
nobound:
  ret ptr null
callpy:
  %out = call ptr @PyObject_Vectorcall(ptr %bound, ptr %args, i64 %nargs, ptr %kwnames)
  call void @Py_DecRef(ptr %bound)
  ret ptr %out
}
