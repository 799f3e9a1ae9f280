#!/usr/bin/env bash
# Configure the one-host cell (run by install.sh with sge_qmaster up): the host as submit and
# execution host, a 1 s accounting flush, a 1 s schedule interval, an smp parallel environment,
# and all.q with load_thresholds NONE (a load above ~3.5 on 2 cores would otherwise put it in alarm).
set -e
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
H=$(hostname)
qconf -as "$H" || true
# global configuration: 1 s accounting flush
qconf -sconf > /tmp/global
sed -i -e "s/flush_time=[0-9:]*/flush_time=00:00:01/" /tmp/global
qconf -Mconf /tmp/global
qconf -sconf | grep -A1 reporting_params
# scheduler: 1 s interval
qconf -ssconf > /tmp/sconf
sed -i -e 's/^schedule_interval .*/schedule_interval 0:0:1/' -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' /tmp/sconf
qconf -Msconf /tmp/sconf
# execution host
cat > /tmp/host <<H2
hostname $H
load_scaling NONE
complex_values NONE
user_lists NONE
xuser_lists NONE
projects NONE
xprojects NONE
usage_scaling NONE
report_variables NONE
H2
qconf -Ae /tmp/host || qconf -Me /tmp/host
# smp parallel environment
cat > /tmp/pe <<P
pe_name smp
slots 999
user_lists NONE
xuser_lists NONE
start_proc_args NONE
stop_proc_args NONE
allocation_rule \$pe_slots
control_slaves FALSE
job_is_first_task TRUE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
P
qconf -Ap /tmp/pe || qconf -Mp /tmp/pe
# queue
cat > /tmp/q <<Q
qname all.q
hostlist $H
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list smp
rerun FALSE
slots 8
tmpdir /tmp
shell /bin/sh
prolog NONE
epilog NONE
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects NONE
xprojects NONE
calendar NONE
initial_state default
s_rt INFINITY
h_rt INFINITY
s_cpu INFINITY
h_cpu INFINITY
s_fsize INFINITY
h_fsize INFINITY
s_data INFINITY
h_data INFINITY
s_stack INFINITY
h_stack INFINITY
s_core INFINITY
h_core INFINITY
s_rss INFINITY
h_rss INFINITY
s_vmem INFINITY
h_vmem INFINITY
Q
qconf -Aq /tmp/q || qconf -Mq /tmp/q
