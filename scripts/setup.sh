#!/usr/bin/env bash
# Idempotent set-up of the development venv (.venv/): ROS 2 Kilted wheels, the messages
# package built with cmake into the venv, torch (CPU, pinned), the project's dependencies and
# emg_rcnn_ros in editable mode. Each step is skipped when its inputs have not changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${EMG_VENV:-$root/.venv}
py=${PYTHON:-python3}
cd "$root"

log() { printf '[setup] %s\n' "$*" >&2; }
stamp_ok() { [ -f "$venv/.stamp-$1" ] && [ "$(cat "$venv/.stamp-$1")" = "$2" ]; }
stamp_set() { printf '%s' "$2" >"$venv/.stamp-$1"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
export VIRTUAL_ENV=$venv

h=$(hash_of requirements/*.txt)
if ! stamp_ok deps "$h"; then
  log "installing dependencies (ROS 2 wheels, torch CPU, python libs)"
  "$vpy" -m pip install -q --disable-pip-version-check --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
  "$vpy" -m pip install -q --disable-pip-version-check \
    -r requirements/ros.txt -r requirements/msgs-build.txt -r requirements/python.txt -r requirements/dev.txt \
    2> >(grep -v "is ignored: it is neither" >&2)
  # The wheels' CMake files point at the wheel builder's Python: repoint them at ours.
  pyinc=$("$vpy" -c "import sysconfig;print(sysconfig.get_paths()['include'])")
  npinc=$("$vpy" -c "import numpy;print(numpy.get_include())")
  { grep -rl "/opt/python/cp3" "$venv/share" --include='*.cmake' || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$pyinc#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$npinc#g"
  rm -f "$venv/.stamp-msgs"
  stamp_set deps "$h"
fi

h=$(hash_of emg_rcnn_ros_msgs/CMakeLists.txt emg_rcnn_ros_msgs/package.xml emg_rcnn_ros_msgs/msg/*.msg)
if ! stamp_ok msgs "$h"; then
  command -v cmake >/dev/null || { log "cmake missing: apt-get install -y cmake g++ make"; exit 1; }
  log "building emg_rcnn_ros_msgs into the venv"
  mkdir -p "$root/build"
  bdir="$root/build/msgs"
  rm -rf "$bdir"
  AMENT_PREFIX_PATH=$venv cmake -S emg_rcnn_ros_msgs -B "$bdir" -DCMAKE_PREFIX_PATH="$venv" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$vpy" -DBUILD_TESTING=OFF >"$root/build/msgs.log" 2>&1 \
    && cmake --build "$bdir" -j2 >>"$root/build/msgs.log" 2>&1 \
    && cmake --install "$bdir" >>"$root/build/msgs.log" 2>&1 \
    || { tail -40 "$root/build/msgs.log" >&2; log "message build failed (log: build/msgs.log)"; exit 1; }
  stamp_set msgs "$h"
fi

h=$(hash_of emg_rcnn_ros/setup.py emg_rcnn_ros/setup.cfg emg_rcnn_ros/package.xml)
if ! stamp_ok pkg "$h"; then
  log "installing emg_rcnn_ros (editable)"
  "$vpy" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e emg_rcnn_ros
  stamp_set pkg "$h"
fi

# pip -e installs neither data_files nor lib/<pkg>/: lay the venv out as colcon's install does,
# so ros2 launch, ros2 run, launch_ros and the runner find everything the same way. Real
# directories (ros2launch walks share/ with os.walk, which does not follow directory links), with
# per-file links back to the tree, so edits show at once. Executables: the console scripts.
share="$venv/share/emg_rcnn_ros"
libexec="$venv/lib/emg_rcnn_ros"
for d in launch config; do
  [ -L "$share/$d" ] && rm -f "$share/$d"   # directory links from earlier versions of this script
  mkdir -p "$share/$d"
  find "$share/$d" -maxdepth 1 -type l ! -exec test -e {} \; -delete   # links to removed files
  for f in "$root/emg_rcnn_ros/$d"/*; do [ -f "$f" ] && ln -sfn "$f" "$share/$d/"; done
done
ln -sfn "$root/emg_rcnn_ros/package.xml" "$share/package.xml"
mkdir -p "$libexec" "$venv/share/ament_index/resource_index/packages"
for exe in $("$vpy" -c "import ast,sys; t=ast.parse(open(sys.argv[1]).read()); \
    print(' '.join(k for n in t.body if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') in ('NODES', 'TOOLS') \
    for k in ast.literal_eval(n.value)))" emg_rcnn_ros/setup.py); do
  [ -x "$venv/bin/$exe" ] || { log "console script $exe missing in $venv/bin"; exit 1; }
  ln -sfn "$venv/bin/$exe" "$libexec/$exe"
done
touch "$venv/share/ament_index/resource_index/packages/emg_rcnn_ros"

# The real ROS 2 command-line tools (ros2 launch/lifecycle/topic, colcon, rosdep with an offline
# rosdistro snapshot), where the kit is beside this repository: the tests that prove the README's ROS
# commands use them (test/test_ros_tools.py). Idempotent (its own stamps); exports in
# $venv/ros2-tools/env.sh.
kit=${ROS2_TOOLS_KIT:-$root/../shared/ros2-tools}
if [ -f "$kit/install.sh" ]; then
  bash "$kit/install.sh" "$venv" >/dev/null || { log "ros2-tools kit install failed"; exit 1; }
fi
log "venv ready: $venv"
